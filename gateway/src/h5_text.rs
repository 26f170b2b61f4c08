//! The words, layout and style of the members' H5 pages: Chinese (zh-CN) and English text from
//! one table, one page frame (maud escapes every value it is given), one small stylesheet
//! embedded in the binary (mobile first; no outside network).

use maud::{html, Markup, DOCTYPE};

/// The language of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locale {
    ZhCn,
    En,
}

impl Locale {
    /// `zh-CN` or `en` (the session API's values).
    pub fn parse(text: &str) -> Option<Locale> {
        match text {
            "zh-CN" => Some(Locale::ZhCn),
            "en" => Some(Locale::En),
            _ => None,
        }
    }

    /// The language an `Accept-Language` header prefers of the two (English when it names
    /// neither first).
    pub fn from_accept_language(header: Option<&str>) -> Locale {
        let first = header
            .unwrap_or_default()
            .split(',')
            .map(|part| part.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .find(|tag| tag.starts_with("zh") || tag.starts_with("en"));
        match first {
            Some(tag) if tag.starts_with("zh") => Locale::ZhCn,
            _ => Locale::En,
        }
    }

    /// The `lang` attribute.
    pub fn tag(self) -> &'static str {
        match self {
            Locale::ZhCn => "zh-CN",
            Locale::En => "en",
        }
    }
}

/// The stylesheet, served at `/h5/assets/h5.css`.
pub const CSS: &str = include_str!("../assets/h5.css");

/// Every phrase of the pages: (key, zh-CN, en).
const TEXT: &[(&str, &str, &str)] = &[
    ("wallet", "我的钱包", "My wallet"),
    ("cashier", "收银台", "Cashier"),
    ("agreement", "协议签署", "Agreement"),
    ("available", "可用余额", "Available"),
    ("withdrawable", "可提现", "Withdrawable"),
    ("frozen", "冻结", "Frozen"),
    ("unsettled", "待结算", "Unsettled"),
    ("account", "账户", "Account"),
    ("account_holder", "账户持有人", "Account holder"),
    ("virtual_account_no", "虚拟账号", "Virtual account number"),
    ("entries", "收支明细", "Entries"),
    ("no_entries", "暂无明细", "No entries yet"),
    ("older", "更早的明细", "Older entries"),
    ("cards", "银行卡", "Bank cards"),
    ("no_cards", "尚未绑定银行卡", "No card bound"),
    ("recharge", "充值", "Recharge"),
    ("withdraw", "提现", "Withdraw"),
    ("change_card", "绑定/更换银行卡", "Bind or change card"),
    ("password", "支付密码", "Payment password"),
    ("close_account", "注销账户", "Close account"),
    ("agreements", "协议", "Agreements"),
    ("amount", "金额", "Amount"),
    ("submit", "提交", "Submit"),
    ("confirm", "确认", "Confirm"),
    ("open_link_title", "打开页面", "Open the page"),
    ("open_link_hint", "点击下方按钮继续。此链接仅可使用一次，请勿转发。", "Tap the button to continue. This link works once: do not forward it."),
    ("back", "返回", "Back"),
    ("back_to_platform", "返回平台", "Back to the platform"),
    ("to_wallet", "返回钱包", "Back to my wallet"),
    ("recharge_pending", "充值已提交，银行确认后到账。", "Recharge submitted; it lands once the bank confirms."),
    ("order", "订单号", "Order"),
    ("status", "状态", "Status"),
    ("card", "银行卡", "Card"),
    ("arrival", "到账时间", "Arrival"),
    ("standard", "普通到账", "Standard"),
    ("realtime", "实时到账", "Real time"),
    ("channel", "通道", "Channel"),
    ("fee", "手续费", "Fee"),
    ("total_debited", "合计扣款", "Total debited"),
    ("quote", "查看手续费", "See the fee"),
    ("quote_note", "通道与手续费以提交时的路由结果为准。", "Routing at submission decides the channel and fee; this is the expected one."),
    ("no_channel", "暂无可用的提现通道", "No withdrawal channel fits"),
    ("withdrawal_submitted", "提现已提交。", "Withdrawal submitted."),
    ("no_verified_card", "请先绑定并验证银行卡。", "Bind and verify a card first."),
    ("card_no", "卡号", "Card number"),
    ("holder_name", "持卡人姓名", "Holder's name"),
    ("id_number", "证件号码", "ID number"),
    ("phone", "手机号", "Phone"),
    ("bind", "绑定", "Bind"),
    ("unbind", "解绑", "Unbind"),
    ("verify", "验证", "Verify"),
    ("deposit_amount", "银行卡收到的验证金额", "The verification amount your card received"),
    ("replace_note", "新卡验证成功后，原卡将自动解绑。", "Once the new card is verified, the old one is unbound."),
    ("card_verified", "银行卡已验证。", "The card is verified."),
    ("card_bound", "已向银行卡打款一笔小额验证金，请查询后填写。", "A small deposit was sent to the card: enter its amount."),
    ("card_unbound", "银行卡已解绑。", "The card is unbound."),
    ("pending_verification", "待验证", "Awaiting verification"),
    ("verified", "已验证", "Verified"),
    ("locked", "已锁定", "Locked"),
    ("new_password", "新支付密码（6位数字）", "New payment password (6 digits)"),
    ("repeat_password", "再次输入", "Repeat it"),
    ("reset_note", "重置支付密码需验证本人证件号码和手机号。", "Resetting the payment password needs your ID number and phone."),
    ("first_password_note", "设置支付密码需验证本人证件号码和手机号。", "Setting the payment password needs your ID number and phone."),
    ("password_set", "支付密码已设置。", "The payment password is set."),
    ("passwords_differ", "两次输入的密码不一致。", "The two passwords differ."),
    ("second_factor_failed", "证件号码或手机号不正确。", "The ID number or phone is not right."),
    ("close_note", "余额为零的账户方可注销，注销后不可恢复。", "Only an account with zero balances can be closed; closing is final."),
    ("account_closed", "账户已注销。", "The account is closed."),
    ("sign", "同意并签署", "Agree and sign"),
    ("version", "版本", "Version"),
    ("signed_at", "签署时间", "Signed at"),
    ("signed", "已签署", "Signed"),
    ("not_signed", "未签署", "Not signed"),
    ("signature_recorded", "签署成功。", "Signed."),
    ("payer", "付款方", "Payer"),
    ("payees", "收款方", "Payees"),
    ("description", "说明", "Description"),
    ("enter_password", "请输入6位支付密码", "Enter your 6-digit payment password"),
    ("pay", "确认支付", "Pay"),
    ("paid", "支付成功", "Paid"),
    ("tries_left", "剩余尝试次数", "Tries left"),
    ("error", "出错了", "Something went wrong"),
    ("reopen", "请从平台重新打开页面。", "Open the page from the platform again."),
];

/// The phrase `key` in `locale` (the key itself if the table lacks it).
pub fn t(locale: Locale, key: &'static str) -> &'static str {
    TEXT.iter().find(|(k, ..)| *k == key).map_or(key, |&(_, zh, en)| if locale == Locale::ZhCn { zh } else { en })
}

/// What a member reads for an API error code (the API's English message when the table has
/// no words of its own for it).
pub fn error_text(locale: Locale, code: &str, message: &str) -> String {
    let known: &[(&str, &str, &str)] = &[
        ("invalid_payment_password", "支付密码错误", "Wrong payment password"),
        ("payment_locked", "支付密码连续错误5次，支付已锁定", "Five wrong payment passwords: payments are locked"),
        ("payment_password_not_set", "尚未设置支付密码", "No payment password is set yet"),
        ("insufficient_funds", "余额不足", "The balance is short"),
        ("invalid_amount", "金额不正确", "The amount is not valid"),
        ("invalid_card_no", "卡号不正确", "The card number is not valid"),
        ("identity_mismatch", "持卡人信息与账户不符", "The holder is not the account's member"),
        ("verification_failed", "验证金额不正确", "That is not the amount deposited"),
        ("card_locked", "验证错误次数过多，银行卡已锁定", "Too many wrong amounts: the card is locked"),
        ("card_bind_limit_reached", "今日绑卡次数已达上限", "No more cards can be bound today"),
        ("card_not_verified", "银行卡尚未验证", "The card is not verified"),
        ("account_closed", "账户已注销", "The account is closed"),
        ("account_frozen", "账户已冻结", "The account is frozen"),
        ("agreement_required", "请先签署相关协议", "Sign the required agreement first"),
        ("agreement_changed", "协议内容已更新，请重新阅读", "The agreement changed; read it again"),
        ("no_channel_available", "暂无可用通道", "No channel is available"),
        ("csrf_failed", "页面已过期，请刷新后重试", "The form expired; reload and try again"),
        ("session_missing", "会话已失效", "The session has ended"),
        ("link_invalid", "链接无效或已使用", "The link is not valid or was used"),
        ("wrong_purpose", "此会话不能打开该页面", "This session cannot open this page"),
        ("platform_suspended", "该平台已暂停服务", "This platform is suspended"),
        ("identity_locked", "身份信息错误次数过多，请明天再试", "Too many wrong identity answers; try again tomorrow"),
        ("not_found", "未找到", "Not found"),
        (
            "account_is_commission_receiver",
            "该账户为平台分佣收款账户，暂不能注销，请联系平台",
            "This account receives the platform's commission and cannot be closed now: contact the platform",
        ),
        ("account_not_empty", "账户仍有余额，不能注销", "The account still holds funds and cannot be closed"),
    ];
    match known.iter().find(|(k, ..)| *k == code) {
        Some((_, zh, _)) if locale == Locale::ZhCn => zh.to_string(),
        Some((_, _, en)) if message.is_empty() => en.to_string(),
        Some((_, _, en)) => format!("{en} ({message})"),
        None if message.is_empty() => code.to_string(),
        None => message.to_string(),
    }
}

/// The frame of every page: title, the stylesheet, the body.
pub fn page(locale: Locale, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(locale.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                link rel="stylesheet" href="/h5/assets/h5.css";
            }
            body {
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A notice box: `kind` is `ok` or `error`.
pub fn notice(kind: &'static str, text: &str) -> Markup {
    html! { p class={"notice " (kind)} role=(if kind == "error" { "alert" } else { "status" }) { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_table() {
        let cases: &[(Option<&str>, Locale)] = &[
            (None, Locale::En),
            (Some("zh-CN,zh;q=0.9,en;q=0.8"), Locale::ZhCn),
            (Some("en-US,en;q=0.9,zh-CN;q=0.8"), Locale::En),
            (Some("fr-FR, zh-TW;q=0.5"), Locale::ZhCn),
            (Some("de"), Locale::En),
            (Some(""), Locale::En),
        ];
        for (header, expected) in cases {
            assert_eq!(Locale::from_accept_language(*header), *expected, "{header:?}");
        }
        assert_eq!(Locale::parse("zh-CN"), Some(Locale::ZhCn));
        assert_eq!(Locale::parse("zh"), None);
    }

    #[test]
    fn every_phrase_has_both_languages_and_pages_escape() {
        for (key, zh, en) in TEXT {
            assert!(!zh.is_empty() && !en.is_empty(), "{key}");
        }
        let keys: std::collections::HashSet<&str> = TEXT.iter().map(|(k, ..)| *k).collect();
        assert_eq!(keys.len(), TEXT.len(), "no key twice");
        let shown = page(Locale::En, "<script>x</script>", html! { p { ("\"'&<>") } }).into_string();
        assert!(!shown.contains("<script>x"), "{shown}");
        assert!(shown.contains("&lt;script&gt;") && shown.contains("&quot;'&amp;&lt;&gt;"), "{shown}");
    }
}
