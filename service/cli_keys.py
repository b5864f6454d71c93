"""``python -m service keys create NAME | list | revoke NAME``: the API keys in the store.

The store is ``<CLUSTERBENCH_DATA_DIR>/tenants.sqlite3``, the one the server reads: a
key made or revoked here takes effect on a running server within a second or so.
"""

from __future__ import annotations

import argparse
import datetime
import sys

from service.settings import Settings
from service.tenants import KeyNameError, TenantStore, parse_keys


def keys_main(argv: list[str]) -> int:
    """Run the ``keys`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m service keys", description="Manage the service's API keys."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key for a tenant and print it once")
    create.add_argument("name", help="the tenant's name (letters, digits, '_', '.', '-')")
    commands.add_parser("list", help="the key names (never the keys)")
    revoke = commands.add_parser("revoke", help="forget a tenant's key; its data stays")
    revoke.add_argument("name")
    args = parser.parse_args(argv)

    settings = Settings()
    env_keys = parse_keys(settings.api_keys.get_secret_value()) if settings.api_keys else {}
    store = TenantStore(settings.data_dir / "tenants.sqlite3", env_keys)
    try:
        if args.command == "create":
            try:
                key = store.create_key(args.name)
            except KeyNameError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(key)
            print(
                f"The key of {args.name!r}: it is shown only this once; the store keeps "
                "only its hash.",
                file=sys.stderr,
            )
        elif args.command == "list":
            keys = store.list_keys()
            if not keys:
                print(
                    f"no keys in {settings.data_dir / 'tenants.sqlite3'} nor in "
                    "CLUSTERBENCH_API_KEYS (here or in a server started on this data "
                    "directory): the service is open to anyone who reaches it",
                    file=sys.stderr,
                )
            for info in keys:
                when = (
                    datetime.datetime.fromtimestamp(info.created_at, datetime.UTC).isoformat(
                        timespec="seconds"
                    )
                    if info.created_at is not None
                    else "-"
                )
                print(f"{info.name}\t{info.source}\t{when}")
        elif not store.revoke_key(args.name):
            print(f"error: no key named {args.name!r} in the store", file=sys.stderr)
            if args.name in store.environment_names():
                print("(it is set in CLUSTERBENCH_API_KEYS: remove it there)", file=sys.stderr)
            return 1
        else:
            print(f"revoked the key of {args.name!r}")
    finally:
        store.close()
    return 0
