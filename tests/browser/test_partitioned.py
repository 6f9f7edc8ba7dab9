"""A ``Partitioned`` cookie set by a cross-site iframe is stored under the top-level site that
embeds it (CHIPS), sent back inside that partition only."""

from __future__ import annotations

from browser_support import Serve, assert_session_cookie, count_shown, example
from cdp import Tab
from sites import other_site

from asgi_dynamo_session import DynamoDBStore


async def test_partitioned_cookie_is_kept_per_top_level_site(
    tab: Tab, serve: Serve, store: DynamoDBStore
) -> None:
    app = example("counter", store, partitioned=True, same_site="none")
    inner = f"http://127.0.0.1:{await serve(app)}/"
    top = f"http://localhost:{await serve(other_site)}/embed?src={inner}"
    await tab.watch_frames()
    for load in range(3):
        await tab.goto(top)
        await tab.shot(f"embedded{load + 1}")
        assert count_shown(await tab.frame_text(inner)) == load
    (embedded,) = await tab.cookies(inner)
    assert_session_cookie(embedded, "127.0.0.1", same_site="None")
    assert embedded["partitionKey"] == {
        "topLevelSite": "http://localhost",
        "hasCrossSiteAncestor": True,
    }

    # The same app at top level is another partition: that cookie is not sent, a new one is set.
    assert count_shown(await tab.goto(inner)) == 0
    await tab.shot("top-level")
    (own,) = await tab.cookies(inner)  # what this page's partition holds
    assert own["value"] != embedded["value"]
    assert own["partitionKey"] == {
        "topLevelSite": "http://127.0.0.1",
        "hasCrossSiteAncestor": False,
    }
    assert_session_cookie(own, "127.0.0.1", same_site="None")
    jar = {c["partitionKey"]["topLevelSite"]: c["value"] for c in await tab.jar()}
    assert jar == {"http://localhost": embedded["value"], "http://127.0.0.1": own["value"]}

    # Embedded again, the first partition's session goes on counting.
    await tab.goto(top)
    await tab.shot("embedded-again")
    assert count_shown(await tab.frame_text(inner)) == 3
    assert [c["value"] for c in await tab.cookies(inner)] == [embedded["value"]]
