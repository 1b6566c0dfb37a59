"""Configuration of the VENs: ``[[openadr.vens]]`` tables in the settings TOML file.

Any number of VENs run inside ``ampflow serve``, each talking to one VTN for its own sites::

    [[openadr.vens]]
    name = "utility-a"                      # Ampflow's label, part of stored event ids
    protocol = "2.0b"
    vtn_url = "https://vtn.example.com/OpenADR2/Simple/2.0b"
    ven_name = "ampflow-depot"
    program = "http://utility.example.com/dr-emergency"   # 2.0b: only this market context
    sites = [{ site_id = "depot", resource = "depot-meter" }]
    tls = { cert_file = "ven.crt", key_file = "ven.key", ca_file = "ca.crt",
            vtn_fingerprint = "12:34:56:78:9A:BC:DE:F0:12:34" }
    [openadr.vens.programs."http://utility.example.com/dr-emergency"]
    simple_fractions = [1.0, 0.8, 0.5, 0.2]

    [[openadr.vens]]
    name = "dso-gac"
    protocol = "3.1"
    vtn_url = "https://vtn.dso.example/openadr3"
    ven_name = "ampflow-depot"
    program = "GAC-depot"                   # 3.x: program name or id
    sites = [{ site_id = "depot" }]
    auth = { client_id = "ampflow", client_secret = "...", scopes = ["read_targets"] }
    callback = { url = "https://ampflow.example/openadr3/dso-gac", port = 8443,
                 cert_file = "cb.crt", key_file = "cb.key" }

Plain ``http://`` VTN URLs need ``allow_insecure = true`` (development only). A 2.0b VEN signs
and verifies messages and uses TLS with its client certificate once ``tls`` is given.

Examples
--------
>>> VenConfig(name="a", protocol="2.0b", vtn_url="http://127.0.0.1:8080/OpenADR2/Simple/2.0b",
...           ven_name="ven", sites=[{"site_id": "depot"}], allow_insecure=True).sites[0].resource
'depot'
>>> try:
...     VenConfig(name="a", protocol="3.1", vtn_url="http://vtn", ven_name="v",
...               sites=[{"site_id": "s"}])
... except ValueError as exc:
...     print(exc.errors()[0]["msg"][13:60])
vtn_url 'http://vtn': plain http needs allow_in
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ampflow.gateway.openadr.mapping import DEFAULT_SIMPLE_FRACTIONS, ProgramRules

__all__ = [
    "CallbackConfig",
    "OAuthConfig",
    "OpenAdrSettings",
    "ProgramConfig",
    "Protocol",
    "SiteBinding",
    "TlsConfig",
    "VenConfig",
]

Seconds = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Protocol(StrEnum):
    """OpenADR version a VEN speaks."""

    V2_0B = "2.0b"
    V3_1 = "3.1"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteBinding(_Frozen):
    """A site this VEN acts for.

    Attributes
    ----------
    site_id : str
        The Ampflow site.
    resource : str
        The name the VTN targets it by (2.0b ``resourceID``, 3.x target); default ``site_id``.
    opted_out : bool
        The site manager has opted the site out: events are acknowledged with an opt-out and
        recorded without a cap.
    """

    site_id: str = Field(min_length=1, max_length=64)
    resource: str = Field(default="", max_length=128)
    opted_out: bool = False

    @model_validator(mode="after")
    def _default_resource(self) -> SiteBinding:
        if not self.resource:
            object.__setattr__(self, "resource", self.site_id)
        return self


class ProgramConfig(_Frozen):
    """Mapping rules of one program (by 2.0b market context or 3.x program name or id)."""

    simple_fractions: tuple[Fraction, Fraction, Fraction, Fraction] = DEFAULT_SIMPLE_FRACTIONS

    def rules(self) -> ProgramRules:
        """As the mapping's :class:`~ampflow.gateway.openadr.mapping.ProgramRules`."""
        return ProgramRules(simple_fractions=self.simple_fractions)


class TlsConfig(_Frozen):
    """2.0b security: TLS client certificate and XML signatures.

    Attributes
    ----------
    cert_file, key_file : Path
        The VEN's PEM certificate and key (client certificate and signing key).
    ca_file : Path
        PEM CA bundle the VTN's certificate is checked against.
    vtn_fingerprint : str
        The VTN certificate's fingerprint (``openleadr.utils.certificate_fingerprint``):
        incoming messages signed by any other certificate are refused.
    passphrase : SecretStr, optional
        Of the key.
    check_hostname : bool
        Check the VTN certificate's name against the URL.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    vtn_fingerprint: str = Field(min_length=1)
    passphrase: SecretStr | None = None
    check_hostname: bool = True


class OAuthConfig(_Frozen):
    """3.x OAuth2 client credentials; ``token_url`` is discovered from the VTN if not given."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    token_url: str | None = None
    scopes: tuple[str, ...] = ()


class CallbackConfig(_Frozen):
    """Where a 3.x VEN receives webhook notifications.

    Attributes
    ----------
    url : str
        The URL the VTN posts to (reachable from the VTN).
    host, port : str, int
        Where the listener binds; port 0 picks a free one (the URL then needs it too, so 0 is
        for tests that read the bound port).
    cert_file, key_file : Path, optional
        Serve the listener over HTTPS.
    """

    url: str = Field(min_length=8)
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    cert_file: Path | None = None
    key_file: Path | None = None


class VenConfig(_Frozen):
    """One VEN: its VTN, identity, credentials, program, mapping rules and sites.

    Attributes
    ----------
    name : str
        Ampflow's label for the VEN (letters, digits, ``_.-``); part of stored event ids.
    protocol : Protocol
    vtn_url : str
        2.0b: the VTN's ``.../OpenADR2/Simple/2.0b`` prefix. 3.x: the API base URL.
    ven_name : str
        The name the VEN registers with (2.0b ``venName``, 3.x ``clientName``).
    ven_id : str, optional
        2.0b: a venID provisioned out of band (else the VTN assigns one).
    program : str, optional
        2.0b: accept only events of this market context. 3.x: the program (name or id) whose
        events to follow. ``None``: every program the VTN shows this VEN.
    programs : dict of str to ProgramConfig
        Rules per program; ``default_rules`` applies to the others.
    sites : list of SiteBinding
        At least one.
    tls : TlsConfig, optional
        2.0b TLS and signatures.
    auth : OAuthConfig, optional
        3.x credentials; without them requests are anonymous.
    ca_file : Path, optional
        3.x: CA bundle for the VTN's certificate (default: the system's).
    callback : CallbackConfig, optional
        3.x webhooks; without it the VEN only polls.
    poll_s : float
        3.x polling period [s] (a safety net when webhooks are on). 2.0b polls at the period
        the VTN gives at registration.
    telemetry_min_s, telemetry_max_s : float
        The sampling periods the VEN offers for TELEMETRY_USAGE (2.0b) [s]; the VTN picks.
    report_s : float
        3.x: how often usage is sampled for the reports an event asks for [s].
    allow_insecure : bool
        Allow a plain ``http://`` VTN (development only).
    """

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    protocol: Protocol
    vtn_url: str = Field(min_length=8)
    ven_name: str = Field(min_length=1, max_length=128)
    ven_id: str | None = None
    program: str | None = None
    programs: dict[str, ProgramConfig] = Field(default_factory=dict)
    default_rules: ProgramConfig = ProgramConfig()
    sites: tuple[SiteBinding, ...] = Field(min_length=1)
    tls: TlsConfig | None = None
    auth: OAuthConfig | None = None
    ca_file: Path | None = None
    callback: CallbackConfig | None = None
    poll_s: Seconds = 10.0
    telemetry_min_s: Seconds = 2.0
    telemetry_max_s: Seconds = 3600.0
    report_s: Seconds = 10.0
    allow_insecure: bool = False

    @model_validator(mode="after")
    def _check(self) -> VenConfig:
        if self.vtn_url.startswith("http://") and not self.allow_insecure:
            raise ValueError(
                f"vtn_url {self.vtn_url!r}: plain http needs allow_insecure = true "
                "(development only); use https"
            )
        if not self.vtn_url.startswith(("http://", "https://")):
            raise ValueError(f"vtn_url {self.vtn_url!r}: expected an http(s) URL")
        ids = [b.site_id for b in self.sites]
        if len(set(ids)) != len(ids):
            raise ValueError(f"sites: each site once, got {ids}")
        if self.protocol is Protocol.V2_0B and (self.auth or self.callback):
            raise ValueError("auth and callback are for 3.x VENs; 2.0b uses tls")
        if self.protocol is Protocol.V3_1 and self.tls is not None:
            raise ValueError("tls is for 2.0b VENs; a 3.x VEN uses auth and ca_file")
        if self.telemetry_min_s > self.telemetry_max_s:
            raise ValueError(
                f"telemetry_min_s {self.telemetry_min_s:g} must not exceed telemetry_max_s "
                f"{self.telemetry_max_s:g}"
            )
        return self

    def rules_for(self, program: str | None) -> ProgramRules:
        """The mapping rules of ``program``."""
        if program is not None and program in self.programs:
            return self.programs[program].rules()
        return self.default_rules.rules()


class OpenAdrSettings(_Frozen):
    """The ``[openadr]`` settings: the VENs ``ampflow serve`` runs."""

    vens: tuple[VenConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> OpenAdrSettings:
        names = [v.name for v in self.vens]
        if len(set(names)) != len(names):
            raise ValueError(f"vens: names must be unique, got {names}")
        return self
