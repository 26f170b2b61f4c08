//! A person at the portals, over plain HTTP: one session cookie, forms posted from the portal's
//! own origin with the CSRF token read from the page, redirects not followed (the tests look at
//! them). The browser tests drive chromium instead; these are the fast checks of the rules.

use super::{answer, Server};

/// The first password a maker gives the operators the tests make (`take_over` changes it).
pub const MAKERS_PASSWORD: &str = "the maker's first password";

/// The first system operator's password, as `serve` printed it at the first start.
pub fn first_password(server: &Server) -> String {
    server
        .lines
        .iter()
        .find_map(|line| line.strip_prefix("portal: first system operator \"admin\", password (shown once; change it at /portal/account): "))
        .expect("the first operator's password is printed at the first start")
        .trim()
        .to_string()
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub content_type: String,
}

impl Page {
    /// The value of the first `name="csrf"` hidden field.
    pub fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + "name=\"csrf\" value=\"".len();
        self.body[at..].split('"').next().expect("quoted").to_string()
    }
}

pub struct Person {
    pub base: String,
    agent: ureq::Agent,
    pub cookie: Option<String>,
}

impl Person {
    pub fn new(server: &Server) -> Person {
        Person::at(&server.base)
    }

    /// A person at the server of base URL `base`.
    pub fn at(base: &str) -> Person {
        Person { base: base.to_string(), agent: ureq::AgentBuilder::new().redirects(0).build(), cookie: None }
    }

    fn read(&mut self, response: ureq::Response) -> Page {
        if let Some(set) = response.header("set-cookie") {
            let pair = set.split(';').next().unwrap_or("").to_string();
            self.cookie = if pair.ends_with('=') { None } else { Some(pair) };
        }
        let status = response.status();
        let location = response.header("location").map(str::to_string);
        let content_type = response.header("content-type").unwrap_or("").to_string();
        let body = response.into_string().unwrap_or_default();
        Page { status, location, body, content_type }
    }

    pub fn get(&mut self, path: &str) -> Page {
        let mut request = self.agent.get(&format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.set("Cookie", cookie);
        }
        let response = answer(request.call(), path);
        self.read(response)
    }

    /// Posts a form as the portal's own page would (Origin = the server).
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(path, fields, Some(&origin))
    }

    pub fn post_from(&mut self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self.agent.post(&format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.set("Cookie", cookie);
        }
        if let Some(origin) = origin {
            request = request.set("Origin", origin);
        }
        let response = answer(request.send_form(fields), path);
        self.read(response)
    }

    /// Signs in; the page after the redirect.
    pub fn login(&mut self, username: &str, password: &str) -> Page {
        self.post("/portal/login", &[("username", username), ("password", password)])
    }

    /// Signs in as `username` with the password its maker chose (`MAKERS_PASSWORD`) and chooses
    /// its own, `password` (an operator approves nothing before it has), which ends the session.
    pub fn take_over_at(base: &str, username: &str, password: &str) {
        let mut person = Person::at(base);
        assert_eq!(person.login(username, MAKERS_PASSWORD).status, 303, "{username} signs in with its maker's password");
        let csrf = person.csrf();
        let changed = person.post("/portal/account/password", &[("csrf", &csrf), ("current", MAKERS_PASSWORD), ("password", password)]);
        assert_eq!((changed.status, changed.location.as_deref()), (303, Some("/portal/login")), "{username}: {}", changed.body);
    }

    /// The CSRF token of the session (read from a page that has a form).
    pub fn csrf(&mut self) -> String {
        self.get("/portal/account").csrf()
    }
}
