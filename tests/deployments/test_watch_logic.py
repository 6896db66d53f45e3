"""The watcher's bookkeeping: settle time, batch size, no re-trigger after a restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from retouch.lib.errors import SourceError, StorageError
from retouch.lib.sources import discover
from retouch.lib.watch import Watcher, scan, state_uri, write_batch_list


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drop(folder: Path, name: str, data: bytes = b"x" * 10) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_scan_lists_images_and_videos_only_and_skips_hidden(tmp_path):
    inbox = tmp_path / "inbox"
    _drop(inbox, "a.jpg")
    _drop(inbox, "sub/b.PNG")
    _drop(inbox, "clip.MOV")
    _drop(inbox, "notes.txt")
    _drop(inbox, ".partial.jpg")
    _drop(inbox, ".upload/c.jpg")
    found = scan(str(inbox))
    listed = sorted(Path(u).relative_to(inbox).as_posix() for u in found)
    assert listed == ["a.jpg", "clip.MOV", "sub/b.PNG"]
    assert found[str(inbox / "a.jpg")].size == 10


def test_missing_source_names_it(tmp_path):
    with pytest.raises(SourceError, match="nowhere.*does not exist"):
        scan(str(tmp_path / "nowhere"))


def test_file_is_handed_out_only_after_settling(tmp_path):
    inbox, clock = tmp_path / "inbox", Clock()
    w = Watcher(str(inbox.parent / "inbox"), settle_s=5, max_batch=10, clock=clock)
    inbox.mkdir()
    f = _drop(inbox, "a.jpg", b"12")
    assert w.poll() == []  # just seen
    clock.now += 3
    f.write_bytes(b"123456")  # still being written: size changed, the settle clock restarts
    assert w.poll() == []
    clock.now += 4
    assert w.poll() == []  # 4 s unchanged < 5 s
    clock.now += 1
    assert w.poll() == [[str(f)]]


def test_settled_files_are_split_into_batches_of_max_size(tmp_path):
    inbox, clock = tmp_path / "inbox", Clock()
    for i in range(7):
        _drop(inbox, f"p{i}.jpg")
    w = Watcher(str(inbox), settle_s=2, max_batch=3, clock=clock)
    assert w.poll() == []
    clock.now += 2
    batches = w.poll()
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [Path(u).name for b in batches for u in b] == [f"p{i}.jpg" for i in range(7)]


def test_restart_does_not_hand_out_seen_files_again(tmp_path):
    inbox, clock = tmp_path / "inbox", Clock()
    _drop(inbox, "a.jpg")
    _drop(inbox, "b.jpg")
    w = Watcher(str(inbox), settle_s=0, clock=clock)
    (batch,) = w.poll()
    w.mark_seen(batch)
    assert w.poll() == []

    # A new watcher process on the same source and workspace: nothing old comes back,
    # a new arrival does.
    again = Watcher(str(inbox), settle_s=0, clock=clock)
    assert again.poll() == []
    c = _drop(inbox, "c.jpg")
    assert again.poll() == [[str(c)]]
    state = json.loads(Path(state_uri(str(inbox))).read_text())
    assert sorted(Path(u).name for u in state["seen"]) == ["a.jpg", "b.jpg"]


def test_unacknowledged_batch_comes_back(tmp_path):
    inbox, clock = tmp_path / "inbox", Clock()
    a = _drop(inbox, "a.jpg")
    w = Watcher(str(inbox), settle_s=0, clock=clock)
    assert w.poll() == [[str(a)]]
    # The event could not be sent (mark_seen never called): the file is offered again,
    # also to a restarted watcher.
    assert w.poll() == [[str(a)]]
    assert Watcher(str(inbox), settle_s=0, clock=clock).poll() == [[str(a)]]


def test_replaced_file_is_a_new_arrival(tmp_path):
    inbox, clock = tmp_path / "inbox", Clock()
    a = _drop(inbox, "a.jpg", b"old")
    w = Watcher(str(inbox), settle_s=0, clock=clock)
    w.mark_seen(w.poll()[0])
    a.write_bytes(b"a new take")
    os.utime(a, (2000, 2000))
    assert w.poll() == [[str(a)]]


def test_corrupt_state_names_the_file_and_the_fix(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    state = Path(state_uri(str(inbox)))
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    with pytest.raises(StorageError, match=r"watcher state .*\.json is unreadable.*delete it"):
        Watcher(str(inbox))


def test_batch_list_file_is_a_source(tmp_path):
    inbox = tmp_path / "inbox"
    uris = [str(_drop(inbox, n)) for n in ("b.jpg", "a.jpg")]
    listed = write_batch_list(uris)
    assert listed.endswith(".txt")
    assert Path(listed).read_text().splitlines() == uris
    items = discover(listed).items
    assert sorted(Path(i.uri).name for i in items) == ["a.jpg", "b.jpg"]


def test_s3_prefix_is_watched(s3_endpoint, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="watch-inbox")
    s3.put_object(Bucket="watch-inbox", Key="shoot/a.jpg", Body=b"abc")
    s3.put_object(Bucket="watch-inbox", Key="shoot/readme.md", Body=b"abc")
    clock = Clock()
    w = Watcher("s3://watch-inbox/shoot", settle_s=1, clock=clock)
    assert w.poll() == []
    clock.now += 1
    assert w.poll() == [["s3://watch-inbox/shoot/a.jpg"]]
