"""Does a PostgreSQL or Redis server answer at this URL? Exit 0 if yes, 1 with the reason if not."""

import sys


def main() -> int:
    kind, url = sys.argv[1], sys.argv[2]
    try:
        if kind == "postgres":
            import psycopg

            dsn = url.rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(dsn.replace("postgres://", "postgresql://", 1), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        elif kind == "redis":
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        else:
            print(f"unknown service {kind}", file=sys.stderr)
            return 2
    except Exception as exc:
        print(f"{kind} at {url}: {exc.__class__.__name__}: {exc}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
