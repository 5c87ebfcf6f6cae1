"""The add-on's side of a folder's fetch without a worker: what it says it holds, what it expects back,
and where the pieces of a reply land (real files in a temporary folder)."""

import os
import threading

from scail2 import protocol
from scail2.core import downloads
from scail2.protocol import direct_io


class Owner:
    """What a `FileStream` uses of `transfer.Transfers`: its writer, counters and the few-cores choice."""

    def __init__(self, here):
        self.background, self.counters, self.write_files_here = direct_io.BackgroundWriter(), {"down": 0}, here

    def _write_piece(self, part, piece, then=None):
        self.counters["down"] += len(piece["payload"])
        self.background.add(part, piece["offset"], piece["payload"], then=then)


def piece(name, data, offset=0, eof=True):
    return {"type": "file_data", "name": name, "offset": offset, "size": offset + len(data), "eof": eof,
            "payload": data}


def test_held_files_are_the_frames_and_mattes_here_and_what_this_fetch_brought():
    matte = protocol.MATTE_FOLDER + "/m_0.png"
    sizes = {"frames/f_0.png": 10, matte: 4, "manifest.json": 7, "preview.mp4": 9, "frames/.f_1.png.part": 3}
    held = downloads._held(sizes, fetched_now={"preview.mp4"})
    assert held == {"frames/f_0.png": 10, matte: 4, "preview.mp4": 9}
    assert [downloads._name_of_part(key) for key in sizes] == [None, None, None, None, "frames/f_1.png"]
    assert downloads._name_of_part(".part") is None and downloads._name_of_part("..part") is None


def test_progress_counts_held_files_as_done_and_says_each_arrival():
    told = []
    progress = downloads.Progress("job1", told.append)
    listed = [{"name": "frames/f_0.png", "size": 10}, {"name": "frames/f_1.png", "size": 20},
              {"name": "manifest.json", "size": 5}]
    assert progress.plan(listed, {"frames/f_0.png": 10, "frames/f_1.png": 19}) == ["frames/f_1.png", "manifest.json"]
    progress.fetched("frames/f_1.png")
    progress.finish()  # an arrival said where it stands: nothing more
    assert [(event["bytes"], event["total"]) for event in told] == [(30, 35)]
    nothing = downloads.Progress("job2", told.append)
    nothing.plan(listed, {"frames/f_0.png": 10, "frames/f_1.png": 20, "manifest.json": 5})
    nothing.finish()
    assert (told[-1]["job"], told[-1]["bytes"], told[-1]["total"]) == ("job2", 35, 35)


def test_a_listing_sets_what_follows_and_a_malformed_one_ends_the_stream(tmp_path):
    arrived = []
    stream = downloads.FileStream(Owner(here=True), str(tmp_path), arrived.append,
                                  plan=lambda listed: ([entry["name"] for entry in listed], [0] * len(listed)))
    stream.listing({"files": [{"name": "frames/f_0.png"}, {"name": "manifest.json"}]})
    assert stream.due == "frames/f_0.png"
    stream.take(piece("frames/f_0.png", b"png bytes"))
    stream.take(piece("manifest.json", b"{}"))
    assert stream.failure is None and stream.due is None and arrived == ["frames/f_0.png", "manifest.json"]
    assert (tmp_path / "frames" / "f_0.png").read_bytes() == b"png bytes" and (tmp_path / "manifest.json").exists()
    broken = downloads.FileStream(Owner(here=True), str(tmp_path / "b"), arrived.append,
                                  plan=lambda listed: ([entry["name"] for entry in listed], [0] * len(listed)))
    broken.listing({"files": [{"size": 3}]})  # no name
    assert isinstance(broken.failure, downloads.TransferError)
    broken.take(piece("x", b"late"))  # nothing taken once it failed
    assert not (tmp_path / "b").exists()


def test_a_piece_for_another_file_than_the_one_due_fails_the_stream_with_what_was_due(tmp_path):
    stream = downloads.FileStream(Owner(here=False), str(tmp_path), lambda name: None, ["a.png", "b.png"], [0, 0])
    stream.take(piece("b.png", b"b"))
    assert "where a.png was due" in str(stream.failure)


def test_small_files_are_written_on_the_receiving_thread_and_a_slow_disk_moves_them_to_the_writer(
        tmp_path, monkeypatch):
    """Quick writes stay on the thread that took the piece; two slow ones send the rest to the writer thread."""
    monkeypatch.setattr(downloads.WritesHere, "QUICK_S", 0.01)  # quick: a busy test machine's 1 ms is not slow
    threads = []

    class Noting(direct_io.ChunkWriter):
        delay = 0.0

        def write_at(self, path, offset, data):
            threads.append(threading.current_thread().name)
            threading.Event().wait(self.delay)
            super().write_at(path, offset, data)

    owner = Owner(here=True)
    disk = Noting()
    owner.background = direct_io.BackgroundWriter(disk)
    names = ["f_{:d}.png".format(k) for k in range(6)]
    stream = downloads.FileStream(owner, str(tmp_path), lambda name: None, names, [0] * 6)
    here = threading.current_thread().name
    stream.take(piece(names[0], os.urandom(1000)))
    disk.delay = 0.05  # 50 ms for 1000 bytes: slow by any measure
    for name in names[1:]:
        stream.take(piece(name, os.urandom(1000)))
    owner.background.wait_all()
    assert stream.failure is None and all((tmp_path / name).stat().st_size == 1000 for name in names)
    assert threads == [here] * 3 + ["scail2-writer"] * 3
    assert owner.counters["down"] == 6000
