"""The shard of a location (whatsapp_common.sharding): stable, spread evenly, and which
resources need a label."""

from __future__ import annotations

from collections import Counter

from whatsapp_common.sharding import SHARD_LABEL, needs_label, shard_names, shard_of


def test_a_locations_shard_is_stable_and_the_shards_share_the_locations_evenly() -> None:
    # Fixed values: a change of the hash would move every location to another shard.
    assert [shard_of(location, 3) for location in ("13", "beauty-shop", "Loc_1")] == [
        "shard-2",
        "shard-0",
        "shard-2",
    ]
    assert shard_of("13", 2) == "shard-0" and shard_of("14", 2) == "shard-1"
    for shards in (2, 3, 8):
        counts = Counter(shard_of(str(location), shards) for location in range(20_000))
        assert set(counts) == set(shard_names(shards))
        expected = 20_000 / shards
        assert all(abs(count - expected) < expected * 0.1 for count in counts.values()), counts
    assert shard_of("anything", 1) == "shard-0"


def test_a_resource_needs_a_label_only_when_sharded_and_its_label_names_no_running_shard() -> None:
    assert not needs_label(None, 1)
    assert not needs_label({}, 1)
    assert needs_label(None, 2)
    assert needs_label({"other": "x"}, 2)
    assert not needs_label({SHARD_LABEL: "shard-1"}, 2)
    assert needs_label({SHARD_LABEL: "shard-2"}, 2)  # the shard count shrank
    assert not needs_label({SHARD_LABEL: "shard-2"}, 4)  # it grew: the label is kept
    assert needs_label({SHARD_LABEL: "shard-x"}, 2)
