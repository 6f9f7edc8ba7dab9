"""README.md stays true: its Python snippets compile, and the import list is the public API."""

from __future__ import annotations

import ast
import base64
import hashlib
import re
from pathlib import Path

import pytest

import asgi_dynamo_session

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_python_snippets() -> None:
    assert len(SNIPPETS) >= 10


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_each_snippet_compiles(index: int) -> None:
    compile(SNIPPETS[index], f"README.md snippet {index}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_every_name_the_readme_imports_from_the_package_exists() -> None:
    imported: set[str] = set()
    for snippet in SNIPPETS:
        tree = ast.parse(snippet)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "asgi_dynamo_session":
                imported.update(alias.name for alias in node.names)
    assert imported
    assert imported <= set(asgi_dynamo_session.__all__)


def test_the_seed_configuration_example_builds_a_store_without_io() -> None:
    (usage,) = [s for s in SNIPPETS if "MyTowerSessions" in s]
    namespace: dict[str, object] = {}
    exec(compile(usage, "README usage", "exec"), namespace)
    store = namespace["store"]
    assert isinstance(store, asgi_dynamo_session.DynamoDBStore)
    assert store.props.table_name == "MyTowerSessions"
    hashed = base64.urlsafe_b64encode(hashlib.sha256(b"abc").digest()).rstrip(b"=").decode()
    assert store.key("abc") == {
        "session_id": {"S": "SESSIONS::TOWER::" + hashed},
        "sort_key": {"S": "TOWER_SESSIONS::" + hashed},
    }
    assert isinstance(namespace["app"], asgi_dynamo_session.SessionMiddleware)
