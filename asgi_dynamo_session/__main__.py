"""`python -m asgi_dynamo_session`: the operations command (see `asgi-dynamo-session --help`)."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
