"""The first admin credential: a user token the control plane issues itself on first start.

Without it, an API that refuses anonymous writes could only be administered from loopback.
As in Kuma, the token (user and group `mesh-system:admin`, valid 10 years) is kept in the
GlobalSecret `admin-user-token`, so every instance sharing a store hands out the same one.
zonemesh also writes it to `<data-dir>/admin-user-token` (mode 0600: only the CP's user can
read it), re-written from the secret when the file is missing or stale, and logs the path.
`KUMA_API_SERVER_AUTHN_TOKENS_BOOTSTRAP_ADMIN_TOKEN=false` turns all of this off.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from pathlib import Path

from zonemesh.auth.service import MAX_VALIDITY
from zonemesh.auth.tokens import ADMIN_GROUP, TokenError
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.registry import GLOBAL_SECRET
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import AlreadyExistsError

log = logging.getLogger("zonemesh.api")

ADMIN_TOKEN_SECRET = "admin-user-token"
ADMIN_TOKEN_FILE = "admin-user-token"
_SECRET_KEY = ResourceKey(GLOBAL_SECRET.name, "", ADMIN_TOKEN_SECRET)


def admin_token_path(data_dir: Path) -> Path:
    return data_dir / ADMIN_TOKEN_FILE


class AdminTokenBootstrap:
    """Started after the token service (it signs with the user token key)."""

    name = "admin-token"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.path: Path | None = None

    async def start(self) -> None:
        config = self.runtime.config
        if not config.api_server.authn.tokens.bootstrap_admin_token:
            log.info("no admin user token bootstrap (apiServer.authn.tokens.bootstrapAdminToken)")
            return
        token = await self._stored_or_new()
        self.path = write_token_file(admin_token_path(config.data_dir), token)
        log.info("admin user token: %s (use it with --token or Authorization: Bearer)", self.path)
        try:
            self.runtime.tokens.verify_user(token)
        except TokenError as e:
            log.warning(
                "the stored admin user token does not verify (%s): delete GlobalSecret %s and "
                "restart to issue a new one",
                e.message,
                ADMIN_TOKEN_SECRET,
            )

    async def stop(self) -> None:
        return None

    async def _stored_or_new(self) -> str:
        store = self.runtime.store
        stored = await store.find(_SECRET_KEY)
        if stored is not None:
            return _token_of(stored)
        token = await self.runtime.tokens.issue_user(
            name=ADMIN_GROUP, groups=[ADMIN_GROUP], valid_for=MAX_VALIDITY
        )
        resource = Resource(
            type=GLOBAL_SECRET.name,
            name=ADMIN_TOKEN_SECRET,
            mesh="",
            spec=SecretSpec(data=base64.b64encode(token.encode()).decode()),
        )
        try:
            await store.create(resource)
        except AlreadyExistsError:
            # Another instance on the same store was first: everyone uses its token.
            await store.catch_up()
            stored = await store.find(_SECRET_KEY)
            if stored is None:
                raise
            return _token_of(stored)
        log.info("issued the admin user token (GlobalSecret %s)", ADMIN_TOKEN_SECRET)
        return token


def _token_of(resource: Resource) -> str:
    spec = resource.spec
    if not isinstance(spec, SecretSpec):
        raise TypeError(f"GlobalSecret {ADMIN_TOKEN_SECRET} holds no secret data")
    return spec.value.decode("utf-8", errors="replace").strip()


def write_token_file(path: Path, token: str) -> Path:
    """`token` in `path`, readable by this user only; creates the directory (0700) if needed.

    Written to a temporary file and renamed, so that no reader sees half a token and a file
    left with wider permissions (or a symlink planted there) is replaced rather than written
    through.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = token.encode() + b"\n"
    with contextlib.suppress(OSError):
        if path.read_bytes() == content and (path.lstat().st_mode & 0o777) == 0o600:
            return path
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path
