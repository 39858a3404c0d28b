#!/usr/bin/env python3
"""Write the .env that docker-compose.yml requires: fresh random secrets, 0600, never overwritten.

    python3 deploy/make-env.py            # writes ./.env (run it next to docker-compose.yml)
    python3 deploy/make-env.py PATH

Passwords are 64 hex characters (URL-safe: the worker's goes into its ClickHouse URL). The
ClickHouse server gets only their SHA-256; the worker and Grafana get the passwords they log in
with. ClickHouse's administrator password is printed once on stdout and stored nowhere; its hash
is in .env. Standard library only, so it runs on any host with Python 3.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path


def secret_env() -> tuple[dict[str, str], str]:
    """The .env variables, and the ClickHouse administrator's password (which .env does not hold)."""
    admin, m1, access, grafana = (secrets.token_hex(32) for _ in range(4))
    sha = lambda password: hashlib.sha256(password.encode()).hexdigest()  # noqa: E731
    return {
        "CLICKHOUSE_ADMIN_PASSWORD_SHA256": sha(admin),
        "CLICKHOUSE_M1_PASSWORD": m1,
        "CLICKHOUSE_M1_PASSWORD_SHA256": sha(m1),
        "CLICKHOUSE_ACCESS_PASSWORD": access,  # the operator's, for provisioning tenants; no container gets it
        "CLICKHOUSE_ACCESS_PASSWORD_SHA256": sha(access),
        "CLICKHOUSE_TENANT_SECRET": secrets.token_hex(32),  # tenants' ClickHouse passwords derive from it
        "CLICKHOUSE_GRAFANA_PASSWORD": grafana,
        "CLICKHOUSE_GRAFANA_PASSWORD_SHA256": sha(grafana),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "GRAFANA_SECRET_KEY": secrets.token_hex(32),
    }, admin


def main(path: Path) -> None:
    env, admin = secret_env()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        sys.exit(f"{path} exists: its secrets may be in use (Grafana keeps its first admin password and key)")
    with os.fdopen(fd, "w") as out:
        out.write("# Secrets of docker-compose.yml, made by deploy/make-env.py. Never commit this file.\n")
        out.writelines(f"{name}={value}\n" for name, value in env.items())
    print(f"wrote {path}. ClickHouse administrator password (shown once, not stored): {admin}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".env"))
