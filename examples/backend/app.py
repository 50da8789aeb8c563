#!/usr/bin/env python3
"""The example backend of the chaos experiments: a small web API with a Redis read-through cache
in front of PostgreSQL.

    python3 app.py --port P --redis-port R [--redis-host NAME] --pg-dsn DSN [--fallback]
                   [--pg-pool-idle N]

GET /items/<id>  200 {"id", "name", "source": "cache" | "db" | "db-fallback"}, or 503 {"error"}
GET /healthz     200 "ok", touching neither Redis nor PostgreSQL

Only Debian's packages are needed (python3-flask, python3-redis, python3-psycopg2); it listens on
127.0.0.1 only.
"""
import argparse
import contextlib
import json
import logging
import sys
import threading

import psycopg2
import redis
from flask import Flask, jsonify

# Cached rows live for 1 s only, so that most requests consult Redis: a fault on Redis shows in
# the API's answers at once instead of hiding behind a warm cache.
CACHE_TTL_SECONDS = 1
ITEM_COUNT = 100

log = logging.getLogger("backend")


class PgPool:
    """A few idle PostgreSQL connections kept for reuse; a connection that saw an error is closed
    instead of returned, so the next request connects afresh (after PostgreSQL restarts, say)."""

    def __init__(self, dsn, max_idle=4):
        self.dsn = dsn
        self.max_idle = max_idle
        self.idle = []
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self):
        with self.lock:
            conn = self.idle.pop() if self.idle else None
        if conn is None:
            conn = psycopg2.connect(self.dsn, connect_timeout=1)
            conn.autocommit = True
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self.lock:
            if len(self.idle) < self.max_idle:
                self.idle.append(conn)
                conn = None
        if conn is not None:
            conn.close()


@contextlib.contextmanager
def redis_client(host, port):
    # A NEW client, hence a new TCP connection, for every request: the experiments inject
    # `connect-error` into this process's cgroup, which fails only new connect() calls. A
    # long-lived pooled connection would never connect again and so would hide the fault.
    # Tight timeouts and no retries: a slow or broken Redis shows as an error within 0.2 s.
    client = redis.Redis(
        # A name is resolved again for every connection, as a client without a DNS cache does:
        # the DNS experiment makes the lookup fail.
        host=host,
        port=port,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry_on_timeout=False,
        decode_responses=True,
    )
    try:
        yield client
    finally:
        # Closes the connection now rather than when the client is garbage-collected.
        client.connection_pool.disconnect()


def create_app(redis_host, redis_port, pg, fallback):
    app = Flask(__name__)

    def read_row(item_id):
        with pg.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT id, name FROM items WHERE id = %s", (item_id,))
            row = cur.fetchone()
        return None if row is None else {"id": row[0], "name": row[1]}

    def error(status, message):
        response = jsonify({"error": message})
        response.status_code = status
        return response

    @app.get("/healthz")
    def healthz():
        return "ok", 200, {"Content-Type": "text/plain"}

    @app.get("/items/<int:item_id>")
    def item(item_id):
        key = f"item:{item_id}"
        redis_failed = None
        with redis_client(redis_host, redis_port) as cache:
            try:
                cached = cache.get(key)
            except (redis.RedisError, OSError) as err:
                if not fallback:
                    return error(503, f"redis: {err}")
                log.warning("redis GET %s failed, serving from postgres: %s", key, err)
                cached, redis_failed = None, err
            if cached is not None:
                return jsonify({**json.loads(cached), "source": "cache"})

            try:
                row = read_row(item_id)
            except psycopg2.Error as err:
                # No fallback for the database: it is the source of truth.
                return error(503, f"postgres: {str(err).strip()}")
            if row is None:
                return error(404, f"no item {item_id}")

            if redis_failed is None:
                try:
                    cache.set(key, json.dumps(row), ex=CACHE_TTL_SECONDS)
                except (redis.RedisError, OSError) as err:
                    if not fallback:
                        return error(503, f"redis: {err}")
                    log.warning("redis SET %s failed, serving from postgres: %s", key, err)
                    redis_failed = err
        source = "db" if redis_failed is None else "db-fallback"
        return jsonify({**row, "source": source})

    return app


def create_schema(pg):
    """The items table with ids 1..100; safe to run again."""
    with pg.connection() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text)")
        cur.execute(
            "INSERT INTO items (id, name) SELECT i, 'item ' || i FROM generate_series(1, %s) i "
            "ON CONFLICT (id) DO NOTHING",
            (ITEM_COUNT,),
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    parser.add_argument("--redis-port", type=int, required=True, help="Redis's port")
    parser.add_argument(
        "--redis-host", default="127.0.0.1", help="Redis's address or DNS name (127.0.0.1)"
    )
    parser.add_argument("--pg-dsn", required=True, help="libpq connection string")
    parser.add_argument(
        "--fallback",
        action="store_true",
        help="on a Redis error serve from PostgreSQL (source db-fallback) instead of 503",
    )
    parser.add_argument(
        "--pg-pool-idle",
        type=int,
        default=4,
        help="idle PostgreSQL connections kept for reuse (0: every query connects afresh)",
    )
    args = parser.parse_args()

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    # No access log: experiments send thousands of requests, and the log should show the errors.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    pg = PgPool(args.pg_dsn, max_idle=args.pg_pool_idle)
    create_schema(pg)
    app = create_app(args.redis_host, args.redis_port, pg, args.fallback)
    log.info(
        "listening on 127.0.0.1:%d (redis port %d, fallback %s)",
        args.port,
        args.redis_port,
        "on" if args.fallback else "off",
    )
    # The threaded development server: one thread per request, enough for the experiments.
    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
