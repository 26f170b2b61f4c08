"""A thin layer over the generated client: signed clients, and operations called by the
contract's method and path so that hand-written code does not depend on generated names.

The generated package (``generate.sh`` writes it; ``clearing_api`` unless told otherwise) does
the real work: building the URL, serialising the body through its models, parsing the answer
into its models. This module only

* builds the generated ``AuthenticatedClient`` with ``PlatformSignature`` as httpx's auth, so
  every request is signed (``signed_client``);
* finds the generated module of an operation by what its ``_get_kwargs`` produces (method and
  path), so a renamed operationId or tag in the document changes no caller (``Operations``);
* turns plain dictionaries into the generated body model (``Model.from_dict``) and gives back the
  status, the JSON, the parsed model and the headers (``Reply``).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import pkgutil
import re
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .operations import ROUTES
from .signing import PlatformSignature

#: The package name ``generate.sh`` gives the generated client (``config.yaml``).
GENERATED_PACKAGE = "clearing_api"


def signed_client(
    base_url: str, platform_id: str, secret: str, *, package: str = GENERATED_PACKAGE, timeout: float = 30.0, clock: Callable[[], float] = time.time
) -> Any:
    """The generated ``AuthenticatedClient``, every request of which is signed as the platform.

    Pass it as ``client=`` to any generated operation (``sync``, ``sync_detailed``,
    ``asyncio``...). The document's ``platform_signature`` scheme is an API key in a header, so
    the generator asks for an ``AuthenticatedClient``; its header is ``X-Platform-Id`` and
    ``PlatformSignature`` adds the timestamp, the nonce and the signature.
    """
    generated = importlib.import_module(package)
    return generated.AuthenticatedClient(
        base_url=base_url.rstrip("/"),
        token=platform_id,
        prefix="",
        auth_header_name="X-Platform-Id",
        raise_on_unexpected_status=False,
        timeout=httpx.Timeout(timeout),
        httpx_args={"auth": PlatformSignature(platform_id, secret, clock)},
    )


def operator_client(base_url: str, token: str, *, package: str = GENERATED_PACKAGE, timeout: float = 30.0) -> Any:
    """The generated ``AuthenticatedClient`` with a system operator's bearer token."""
    generated = importlib.import_module(package)
    return generated.AuthenticatedClient(base_url=base_url.rstrip("/"), token=token, raise_on_unexpected_status=False, timeout=httpx.Timeout(timeout))


@dataclass
class Reply:
    """What an operation answered."""

    status: int
    #: The body as JSON (``None`` when empty; the text when it is not JSON, e.g. a CSV file).
    data: Any
    #: The generated model the body was parsed into (``None`` for an undocumented status).
    parsed: Any
    headers: httpx.Headers

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_code(self) -> str | None:
        """``error.code`` of an error answer (API.md: stable codes such as ``insufficient_funds``)."""
        if isinstance(self.data, dict) and isinstance(self.data.get("error"), dict):
            return self.data["error"].get("code")
        return None

    @property
    def replayed(self) -> bool:
        """Whether the server answered an idempotent replay (``Idempotent-Replay: true``)."""
        return self.headers.get("Idempotent-Replay") == "true"


def _shape(path: str) -> str:
    """A path with its parameters' names left out: ``/v1/orders/{}``."""
    return re.sub(r"\{[^}/]*\}", "{}", path)


class _Placeholder:
    """Stands for a required body or query value when ``_get_kwargs`` is asked for the route."""

    def to_dict(self) -> dict[str, Any]:
        return {}

    def __str__(self) -> str:
        return "placeholder"


@dataclass
class Operation:
    """One generated operation module and what it serves."""

    module: types.ModuleType
    method: str
    path: str
    path_parameters: list[str]
    other_parameters: list[str]
    body_type: Any

    @property
    def name(self) -> str:
        """The generated module's name (the operationId in snake case)."""
        return self.module.__name__.rsplit(".", 1)[-1]

    def arguments(self, body: Any, parameters: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of ``sync_detailed`` (less ``client``)."""
        accepted = self.path_parameters + self.other_parameters
        arguments: dict[str, Any] = {}
        for name, value in parameters.items():
            # The generator appends "_" to Python keywords (the query parameter ``from``).
            python_name = name if name in accepted else f"{name}_"
            if python_name not in accepted or python_name == "body":
                raise TypeError(f"{self.method} {self.path} takes {', '.join(accepted) or 'no parameters'}, not {name!r}")
            arguments[python_name] = _coerced(self.module, python_name, value)
        missing = [name for name in self.path_parameters if name not in arguments]
        if missing:
            raise TypeError(f"{self.method} {self.path} needs {', '.join(missing)}")
        if body is not None:
            if self.body_type is None:
                raise TypeError(f"{self.method} {self.path} takes no body")
            if isinstance(body, dict):
                try:
                    body = self.body_type.from_dict(body)
                except KeyError as missing:
                    raise ValueError(f"{self.method} {self.path}: the body lacks {missing} ({self.body_type.__name__})") from None
                except (TypeError, ValueError) as wrong:
                    raise ValueError(f"{self.method} {self.path}: the body does not fit {self.body_type.__name__}: {wrong}") from None
            arguments["body"] = body
        elif self.body_type is not None and "body" in self.other_parameters:
            raise TypeError(f"{self.method} {self.path} needs a body")
        return arguments


def _coerced(module: types.ModuleType, name: str, value: Any) -> Any:
    """A parameter the document gives as an enum (``kind``, ``status``) taken as its plain
    string too: the generated function wants the enum's member."""
    if not isinstance(value, str):
        return value
    hint = typing.get_type_hints(module.sync_detailed).get(name)
    for option in typing.get_args(hint) or (hint,):
        if isinstance(option, type) and issubclass(option, enum.Enum):
            try:
                return option(value)
            except ValueError:
                return value
    return value


def _body_type(module: types.ModuleType) -> Any:
    hints = typing.get_type_hints(module.sync_detailed)
    annotation = hints.get("body")
    if annotation is None:
        return None
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if hasattr(candidate, "from_dict"):
            return candidate
    return None


def _describe(module: types.ModuleType) -> Operation:
    """Asks the module's own ``_get_kwargs`` which method and path it requests."""
    signature = inspect.signature(module._get_kwargs)
    arguments: dict[str, Any] = {}
    path_parameters: list[str] = []
    other_parameters: list[str] = []
    sentinels: dict[str, str] = {}
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            sentinel = f"zzparam{index}zz"
            sentinels[sentinel] = name
            arguments[name] = sentinel
            path_parameters.append(name)
        else:
            other_parameters.append(name)
            if parameter.default is inspect.Parameter.empty:
                arguments[name] = _Placeholder()
    request = module._get_kwargs(**arguments)
    path = request["url"]
    for sentinel, name in sentinels.items():
        path = path.replace(sentinel, "{" + name + "}")
    return Operation(module, request["method"].upper(), path, path_parameters, other_parameters, _body_type(module))


class Operations:
    """Every operation of a generated package, found by method and path or by module name."""

    def __init__(self, package: str = GENERATED_PACKAGE) -> None:
        api = importlib.import_module(f"{package}.api")
        self.by_route: dict[tuple[str, str], Operation] = {}
        self.by_name: dict[str, Operation] = {}
        #: Modules that could not be described, with the reason (none is expected).
        self.skipped: dict[str, str] = {}
        for info in pkgutil.walk_packages(api.__path__, f"{api.__name__}."):
            if info.ispkg:
                continue
            module = importlib.import_module(info.name)
            if not (hasattr(module, "sync_detailed") and hasattr(module, "_get_kwargs")):
                continue
            try:
                operation = _describe(module)
            except Exception as error:  # a generated module this layer cannot read
                self.skipped[info.name] = repr(error)
                continue
            self.by_route[(operation.method, _shape(operation.path))] = operation
            self.by_name[operation.name] = operation

    def find(self, operation: str) -> Operation:
        """By a name of ``ROUTES``, by ``"METHOD /path/{param}"``, or by the generated module's name."""
        if operation in ROUTES:
            method, path = ROUTES[operation]
        elif " /" in operation:
            method, path = operation.split(" ", 1)
        elif operation in self.by_name:
            return self.by_name[operation]
        else:
            raise KeyError(f"no operation {operation!r}: use a name of clearing_sdk.operations.ROUTES, 'METHOD /path' or a generated module's name")
        found = self.by_route.get((method.upper(), _shape(path)))
        if found is None:
            raise KeyError(f"the generated client has no {method.upper()} {path} (was it generated from this server's /openapi.json?)")
        return found


class Clearing:
    """Calls the platform API through the generated client, signed.

    >>> sdk = Clearing.platform("http://127.0.0.1:8080", platform_id, secret)
    >>> reply = sdk.call("create_member", {"out_order_no": "m-1", "type": "individual", ...})
    >>> reply.status, reply.data["member_id"]
    """

    def __init__(self, client: Any, package: str = GENERATED_PACKAGE) -> None:
        self.client = client
        self.operations = Operations(package)

    @classmethod
    def platform(
        cls, base_url: str, platform_id: str, secret: str, *, package: str = GENERATED_PACKAGE, timeout: float = 30.0, clock: Callable[[], float] = time.time
    ) -> Clearing:
        """A platform's signed client."""
        return cls(signed_client(base_url, platform_id, secret, package=package, timeout=timeout, clock=clock), package)

    @classmethod
    def operator(cls, base_url: str, token: str, *, package: str = GENERATED_PACKAGE, timeout: float = 30.0) -> Clearing:
        """A system operator's client (bearer token): the operator API and the simulator's pages."""
        return cls(operator_client(base_url, token, package=package, timeout=timeout), package)

    def call(self, operation: str, body: Any = None, **parameters: Any) -> Reply:
        """Calls an operation: path and query parameters by name, the body as a dict or a model.

        An answer the generated models cannot take (a field or a value the server added after
        this SDK was generated: API.md lets it add them) is still a ``Reply``, with ``parsed``
        left ``None``: ``data`` and ``error_code`` hold what came. (An error code added later
        parses: the document types ``error.code`` as a string.)
        """
        found = self.operations.find(operation)
        kwargs = found.module._get_kwargs(**found.arguments(body, parameters))
        response = self.client.get_httpx_client().request(**kwargs)
        try:
            parsed = found.module._parse_response(client=self.client, response=response)
        except (KeyError, TypeError, ValueError):
            parsed = None
        return Reply(int(response.status_code), _body(response), parsed, httpx.Headers(response.headers))

    def close(self) -> None:
        self.client.get_httpx_client().close()

    def __enter__(self) -> Clearing:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _body(response: Any) -> Any:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return response.content.decode("utf-8", errors="replace")
