"""A remote worker that cannot see the client's files, through a proxy that cuts the connection
mid-upload and mid-download: the add-on's client still gets the job's frames, byte for byte
those of a local worker, and no byte goes over twice beyond the chunk in flight at each cut.

The worker runs in a mount namespace of its own with an empty tmpfs over the client's folder
(`unshare -m` as root, else `unshare -r -m`: a user namespace), serving TLS on 127.0.0.1 with a jobs root outside the client's folder.
"""

import json
import os
import shutil
import socket
import struct
import threading
import time
import unicodedata
import zlib

import pytest

import blender_testing
import namespaces
import process_guard
from concurrently import at_once
from scail2 import protocol
from scail2.core import transfer
from scail2.core.worker_client import WorkerClient
from scail2.protocol import direct_io

REPO = blender_testing.REPO_ROOT
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")
FOOTAGE = os.path.dirname(blender_testing.FOOTAGE)
TIMEOUT = 240.0


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(BACKEND_PYTHON), reason="no backend environment"),
              pytest.mark.skipif(namespaces.private_mounts() is None, reason=namespaces.why_not())]


class CuttingProxy:
    """127.0.0.1:port -> the worker. Cuts the connection once when the client has sent `cut_up`
    bytes, and once when the worker has sent `cut_down` bytes (it is TLS: only sizes are seen)."""

    def __init__(self, target_port, cut_up, cut_down):
        self.target, self.cut_up, self.cut_down = target_port, cut_up, cut_down
        self.up = self.down = 0
        self.cuts = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            worker = socket.create_connection(("127.0.0.1", self.target))
            pair = [client, worker]
            threading.Thread(target=self._pump, args=(client, worker, True, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(worker, client, False, pair), daemon=True).start()

    def _pump(self, source, sink, upstream, pair):
        while True:
            try:
                data = source.recv(16384)
            except OSError:
                data = b""
            if not data:
                break
            if upstream:
                self.up += len(data)
                cut = "upload" not in self.cuts and self.up >= self.cut_up
            else:
                self.down += len(data)
                cut = "download" not in self.cuts and self.down >= self.cut_down
            if cut:
                self.cuts.append("upload" if upstream else "download")
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.server.close()


def wait_for(client, seen, predicate, timeout=TIMEOUT):
    import time

    deadline = time.monotonic() + timeout
    while True:
        for message in seen:
            if predicate(message):
                return message
        assert time.monotonic() < deadline, "timed out; last messages {!r}".format(seen[-5:])
        seen.extend(client.poll(timeout=0.2))


def small_job(folder):
    return protocol.JobSpec(driving=os.path.join(folder, "driving.mp4"), reference=os.path.join(folder, "ref.jpg"),
                            height=64, width=128, steps=2, seed=3, frame_end=5)


def run_to_the_end(sealed_worker, spec, job_dir):
    """Submit `spec` to the sealed worker (its inputs uploaded), and wait until it is done and fetched."""
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        seen = []
        client.submit(spec, job_dir=str(job_dir), request_id="to-the-end")
        job = wait_for(client, seen, lambda m: m.get("request_id") == "to-the-end" and m["type"] != "progress")
        assert job["type"] == "queued", job
        end = wait_for(client, seen, lambda m: m.get("job") == job["job"] and m["type"] in transfer.END_EVENTS)
        assert end["type"] == "done", end
    finally:
        client.close()


@pytest.fixture(scope="module")
def sealed_worker(tmp_path_factory):
    """A TLS worker that sees an empty tmpfs where the client's folder is."""
    tmp_path = tmp_path_factory.mktemp("sealed")
    client_dir, worker_dir = tmp_path / "client", tmp_path / "worker"
    client_dir.mkdir()
    worker_dir.mkdir()
    shutil.copyfile(os.path.join(FOOTAGE, "scail_001_driving.mp4"), client_dir / "driving.mp4")
    shutil.copyfile(os.path.join(FOOTAGE, "scail_001_ref.jpg"), client_dir / "ref.jpg")
    proc, found = blender_testing.sealed_tls_worker(BACKEND_PYTHON, client_dir, worker_dir)
    yield dict(found, client_dir=client_dir, worker_dir=worker_dir)
    process_guard.end(proc)


def test_a_job_round_trips_through_cuts_byte_for_byte_as_a_local_run(sealed_worker, tmp_path):
    client_dir = sealed_worker["client_dir"]
    inputs = os.path.getsize(client_dir / "driving.mp4") + os.path.getsize(client_dir / "ref.jpg")
    proxy = CuttingProxy(sealed_worker["port"], cut_up=300_000, cut_down=60_000)  # mid-clip; mid-frames
    remote = WorkerClient.connect("127.0.0.1", proxy.port, token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    local = WorkerClient.start(BACKEND_PYTHON, ["--model", "tiny", "--device", "cpu", "--jobs-root",
                                                str(tmp_path / "local_jobs")])
    try:
        seen = []
        remote_dir = client_dir / "job"  # the folder the add-on chose, which the worker cannot see
        remote.submit(small_job(client_dir), job_dir=str(remote_dir), request_id="remote-1")
        queued = wait_for(remote, seen, lambda m: m["type"] == "queued")
        assert queued["job_dir"] == str(remote_dir) and queued["worker_job_dir"].startswith(
            str(sealed_worker["worker_dir"] / "jobs"))
        uploads = [m for m in seen if m.get("phase") == "upload"]
        assert uploads and uploads[-1]["bytes"] == uploads[-1]["total"] == inputs
        end = wait_for(remote, seen, lambda m: m.get("job") == queued["job"] and m["type"] in transfer.END_EVENTS)
        assert end["type"] == "done", end
        assert proxy.cuts == ["upload", "download"]
        frames = [m["path"] for m in seen if m["type"] == "frame_ready"]
        assert frames and all(p.startswith(str(remote_dir)) and os.path.isfile(p) for p in frames)
        assert end["job_dir"] == str(remote_dir) and os.path.isfile(end["manifest"])
        assert os.path.dirname(end["manifest"]) == str(remote_dir)
        # Every input byte went over once, but for the chunk cut in flight.
        assert inputs <= remote.transfers.counters["up"] <= inputs + transfer.CHUNK_BYTES

        mine = []
        local.submit(small_job(client_dir), job_dir=str(tmp_path / "local_job"), request_id="local-1")
        local_id = wait_for(local, mine, lambda m: m["type"] == "queued")["job"]
        assert wait_for(local, mine, lambda m: m.get("job") == local_id and m["type"] in transfer.END_EVENTS)[
            "type"] == "done"
        names = sorted(os.listdir(tmp_path / "local_job" / "frames"))
        assert names == sorted(os.listdir(remote_dir / "frames")) and len(names) == 5
        for name in names:
            with open(tmp_path / "local_job" / "frames" / name, "rb") as a, open(remote_dir / "frames" / name, "rb") as b:
                assert a.read() == b.read(), name
        assert not [n for n in os.listdir(remote_dir / "frames") if n.endswith(".part")]
    finally:
        remote.close()
        local.stop(timeout=30)
        proxy.close()


def test_cancel_stops_an_upload_and_the_job_never_reaches_the_worker(sealed_worker, tmp_path):
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        big = tmp_path / "big.mp4"  # too big to go over before the cancel lands
        big.write_bytes(os.urandom(64 * transfer.CHUNK_BYTES))
        spec = small_job(str(sealed_worker["client_dir"]))
        spec.driving = str(big)
        seen = []
        client.submit(spec, job_dir=str(tmp_path / "job"), request_id="cancel-me")
        wait_for(client, seen, lambda m: m.get("phase") == "upload")
        assert client.cancel_upload("cancel-me")
        end = wait_for(client, seen, lambda m: m.get("request_id") == "cancel-me" and m["type"] != "progress")
        assert end["type"] == "cancelled" and end["local"], end
        assert client.transfers.counters["up"] < big.stat().st_size
        assert not client.cancel_upload("cancel-me")  # over
        client.send("list_jobs", request_id="jobs")
        assert wait_for(client, seen, lambda m: m.get("request_id") == "jobs")["jobs"] == []
    finally:
        client.close()


def write_png(path, width, height, seed):
    """An RGB PNG of pseudo-random pixels (standard library only)."""
    rows = b"".join(b"\x00" + bytes((x * 7 + y * 13 + seed * 29) % 256 for x in range(width * 3))
                    for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                 + chunk(b"IEND", b""))


def test_an_image_sequence_folder_goes_over_as_one_listing(sealed_worker, tmp_path):
    folder = sealed_worker["client_dir"] / "sequence"
    folder.mkdir()
    for k in range(6):
        write_png(folder / "img_{:04d}.png".format(k), 128, 64, k)
    spec = small_job(str(sealed_worker["client_dir"]))
    spec.driving, spec.driving_fps = str(folder), 16.0
    run_to_the_end(sealed_worker, spec, tmp_path / "job")
    assert len(os.listdir(tmp_path / "job" / "frames")) == 5


def test_a_new_file_goes_in_one_request_and_a_known_one_is_asked_for_first(sealed_worker, tmp_path):
    """A file never hashed goes as a new unnamed upload, whose id the worker cannot hold yet: its bytes go at
    once (one request for a small file, not a status and then the bytes). Sent again, each file is known by
    the hash the worker named it by: asked for, found, not sent again."""
    folder = sealed_worker["client_dir"] / "requests_sequence"
    folder.mkdir()
    for k in range(6):
        write_png(folder / "img_{:04d}.png".format(k), 96, 64, 40 + k)
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        transfers = client.transfers
        for sent_before in (False, True):
            requests_before, up_before = transfers._count, transfers.counters["up"]
            job = transfers._upload_inputs("generate", {"driving": str(folder)}, None)
            assert job["driving"].startswith("blobtree:")
            assert transfers._count - requests_before == 6 + 1  # six files (asked or sent) and the listing
            sent = transfers.counters["up"] - up_before
            files = sum(p.stat().st_size for p in folder.iterdir())
            assert sent > files if not sent_before else sent < files  # again: only the listing's bytes
    finally:
        client.close()


def requests_sent_at_each_wait(transfers):
    """A list that gets, each time the client waits for a reply, how many requests it had sent by then."""
    sent = []
    answer = transfers._answer
    transfers._answer = lambda *args, **kwargs: sent.append(transfers._count) or answer(*args, **kwargs)
    return sent


def test_a_folders_small_files_go_several_before_a_reply_and_a_cut_among_them_loses_none(sealed_worker, tmp_path):
    """A sequence of small frames is not one round trip a frame: FILES_IN_FLIGHT of them go before the first
    reply is awaited. The connection cut among them, the rest go once it is back, each named by its hash;
    submitted again (the next take), each is asked for by that hash, as many at once."""
    from scail2.core import uploads

    folder = sealed_worker["client_dir"] / "cut_sequence"
    folder.mkdir()
    for k in range(40):
        write_png(folder / "img_{:04d}.png".format(k), 160, 96, 100 + k)
    sizes = sum(p.stat().st_size for p in folder.iterdir())
    proxy = CuttingProxy(sealed_worker["port"], cut_up=sizes // 2, cut_down=1 << 40)
    client = WorkerClient.connect("127.0.0.1", proxy.port, token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        transfers = client.transfers
        asked_before_answers = requests_sent_at_each_wait(transfers)
        before = transfers._count
        job = transfers._upload_inputs("generate", {"driving": str(folder)}, None)
        assert proxy.cuts == ["upload"]
        assert asked_before_answers[0] - before == uploads.FILES_IN_FLIGHT
        listing_sha = job["driving"].removeprefix("blobtree:").split("/", 1)[0]
        blobs = sealed_worker["worker_dir"] / "jobs" / ".blobs"
        listing = json.loads((blobs / listing_sha).read_text())["files"]
        assert [entry["name"] for entry in listing] == sorted(p.name for p in folder.iterdir())
        for entry in listing:
            assert (blobs / entry["sha256"]).read_bytes() == (folder / entry["name"]).read_bytes(), entry["name"]
        asked_before_answers.clear()
        before, up_before = transfers._count, transfers.counters["up"]
        again = transfers._upload_inputs("generate", {"driving": str(folder)}, None)  # the next take's submit
        assert again["driving"] == job["driving"] and transfers._count - before == 40 + 1  # each file asked for
        assert asked_before_answers[0] - before == uploads.FILES_IN_FLIGHT  # together too
        assert transfers.counters["up"] - up_before == (blobs / listing_sha).stat().st_size  # the listing's bytes only
    finally:
        client.close()
        proxy.close()


def test_the_next_takes_single_inputs_are_asked_for_together_and_new_ones_go_one_by_one(sealed_worker, tmp_path):
    """A job's clip, still and masks: sent once (each new one on its own, as many requests as files), then
    the next take's submit asks for all of them by their hashes before the first reply is awaited (one round
    trip over a remote link, not one a file), and sends nothing."""
    client_dir = sealed_worker["client_dir"]
    inputs = {"driving": client_dir / "driving.mp4", "reference": client_dir / "ref.jpg",
              "driving_mask": tmp_path / "mask.png", "reference_mask": tmp_path / "ref_mask.png"}
    write_png(inputs["driving_mask"], 64, 32, 7)
    write_png(inputs["reference_mask"], 64, 32, 8)
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        transfers = client.transfers
        asked_before_answers = requests_sent_at_each_wait(transfers)
        job = {field: str(path) for field, path in inputs.items()}
        first = transfers._upload_inputs("generate", dict(job), None)
        before, up_before = transfers._count, transfers.counters["up"]
        asked_before_answers.clear()
        again = transfers._upload_inputs("generate", dict(job), None)
        assert again == first and all(ref.startswith("blob:") for ref in again.values())
        assert transfers._count - before == 4 and asked_before_answers[0] - before == 4  # all asked, then answered
        assert transfers.counters["up"] == up_before
    finally:
        client.close()


def test_inputs_are_checked_on_a_transfer_mode_worker_and_the_submit_after_sends_nothing(sealed_worker, tmp_path):
    """Check Inputs (and Generate, which checks first) against a remote worker: the inputs go up first and the
    worker checks them (it used to refuse: "a remote client names no files of the worker"); the job then
    submitted asks for them by their hashes and sends none of their bytes again."""
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        spec, seen = small_job(str(sealed_worker["client_dir"])), []
        client.send("check_inputs", job=spec.to_dict(), request_id="check-remote")
        answer = wait_for(client, seen, lambda m: m.get("request_id") == "check-remote" and m["type"] != "progress")
        assert answer["type"] == "input_checks", answer
        assert {check["name"] for check in answer["report"]["checks"]} >= {"cut", "camera", "blur"}
        sent = client.transfers.counters["up"]
        client.submit(spec, job_dir=str(tmp_path / "job"), request_id="after-check")
        assert wait_for(client, seen, lambda m: m.get("request_id") == "after-check" and m["type"] != "progress")[
            "type"] == "queued"
        assert client.transfers.counters["up"] == sent  # nothing sent twice
    finally:
        client.close()


def test_inputs_named_in_any_script_go_over_under_their_own_names(sealed_worker, tmp_path):
    """A reference called "Zoé キャラ (final).jpg" (spelled as macOS does: e and a combining accent) and a
    driving image folder "plan séquence": both linked on the worker by their names made safe (a worker
    that took only ASCII refused the submit: "not a plain file name")."""
    client_dir = sealed_worker["client_dir"]
    reference = client_dir / unicodedata.normalize("NFD", "Zoé キャラ (final).jpg")
    shutil.copyfile(client_dir / "ref.jpg", reference)
    folder = client_dir / "plan séquence"
    folder.mkdir()
    for k in range(6):
        write_png(folder / "img_{:04d}.png".format(k), 128, 64, k)
    spec = small_job(str(client_dir))
    spec.driving, spec.driving_fps, spec.reference = str(folder), 16.0, str(reference)
    run_to_the_end(sealed_worker, spec, tmp_path / "job")
    assert len(os.listdir(tmp_path / "job" / "frames")) == 5
    links = {path.name for path in (sealed_worker["worker_dir"]).rglob("*") if "links" in path.parts}
    assert {"Zoé_キャラ__final_.jpg", "plan_séquence"} <= links


def test_a_downloads_whole_chunks_land_in_buffers_the_add_on_uses_again(sealed_worker, tmp_path):
    """Each 4 MiB piece is received into one of the add-on's pooled buffers, which its writer takes back
    once the piece is written: the file is whole, and a buffer waits in the pool for the next download."""
    from scail2.protocol import direct_io

    served = sealed_worker["worker_dir"] / "jobs" / "pooled_download"
    served.mkdir(parents=True)
    data = os.urandom(3 * (4 << 20) + 77)
    (served / "plate.bin").write_bytes(data)
    direct_io.PAYLOAD_BUFFERS._free.clear()
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        client.transfers.fetch_folder(str(served), str(tmp_path / "local"))
    finally:
        client.close()
    assert (tmp_path / "local" / "plate.bin").read_bytes() == data
    assert direct_io.PAYLOAD_BUFFERS._free


def test_two_connections_downloading_at_once_share_the_pool_and_each_gets_its_own_bytes(sealed_worker, tmp_path):
    """Two clients in one add-on (two workers, or two of an artist's connections) fetch at once: their chunks
    come through the one pool of buffers, and each folder is the bytes its worker sent."""
    served = {}
    for name in ("left", "right"):
        served[name] = sealed_worker["worker_dir"] / "jobs" / "pooled_{:s}".format(name)
        served[name].mkdir(parents=True)
        (served[name] / "plate.bin").write_bytes(os.urandom(5 * (4 << 20) + 99))

    def fetch(name):
        client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                      fingerprint=sealed_worker["fingerprint"], timeout=120)
        try:
            client.transfers.fetch_folder(str(served[name]), str(tmp_path / name))
        finally:
            client.close()

    at_once(fetch, list(served))
    for name in served:
        assert (tmp_path / name / "plate.bin").read_bytes() == (served[name] / "plate.bin").read_bytes(), name


@pytest.mark.parametrize("asks, requests", [("fetch_changed", 1), ("fetch_files", 2), ("too_many_held", 2)])
def test_a_folder_comes_back_in_one_request_from_where_a_cut_left_each_file(
        sealed_worker, tmp_path, monkeypatch, asks, requests):
    """The worker offers fetch_changed: it lists the folder and sends its files in one request, a part file
    a cut left goes on from its size, and one longer than the worker's file (an older one) is replaced by
    the whole file. A worker with only fetch_files is asked for its listing first, then for the files in
    one request (so is one whose request would name more held files than a line holds); one without
    either gets a request a file, for the same bytes."""
    from scail2.core import downloads

    if asks == "too_many_held":
        monkeypatch.setattr(downloads, "MAX_HELD", 1)
    served = sealed_worker["worker_dir"] / "jobs" / "served_folder_{:s}".format(asks)
    (served / "frames").mkdir(parents=True)
    for k in range(12):
        (served / "frames" / "frame_{:06d}.png".format(k)).write_bytes(os.urandom(50_000 + 13_000 * k))
    (served / "preview.mp4").write_bytes(os.urandom(5 << 20))  # more than one binary chunk
    (served / "manifest.json").write_text("{}")
    local = tmp_path / "local"
    (local / "frames").mkdir(parents=True)
    cut = (served / "frames" / "frame_000002.png").read_bytes()[:1000]
    (local / "frames" / ".frame_000002.png.part").write_bytes(cut)
    (local / "frames" / ".frame_000005.png.part").write_bytes(b"x" * 200_000)  # longer than the file
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    try:
        transfers = client.transfers
        assert transfers.fetch_files and transfers.fetch_changed
        transfers.fetch_changed = asks != "fetch_files"  # else as a worker of before that request
        requests_before, down_before = transfers._count, transfers.counters["down"]
        transfers.fetch_folder(str(served), str(local))
        assert transfers._count - requests_before == requests
        names = sorted(str(p.relative_to(served)) for p in served.rglob("*") if p.is_file())
        assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == names  # no .part left
        for name in names:
            assert (local / name).read_bytes() == (served / name).read_bytes(), name
        total = sum((served / name).stat().st_size for name in names)
        assert transfers.counters["down"] - down_before == total - len(cut)  # the cut's bytes not again

        down_before = transfers.counters["down"]
        transfers.fetch_folder(str(served), str(local))  # again: only what is not written once comes back
        assert transfers.counters["down"] - down_before == sum(
            (served / name).stat().st_size for name in names if not name.startswith("frames/"))

        transfers.fetch_changed = transfers.fetch_files = False  # as a worker of before both requests
        requests_before = transfers._count
        transfers.fetch_folder(str(served), str(tmp_path / "again"))
        assert transfers._count - requests_before > len(names)
        for name in names:
            assert (tmp_path / "again" / name).read_bytes() == (served / name).read_bytes(), name
    finally:
        client.close()


class ThreadNoting(direct_io.ChunkWriter):
    """Real writes, each noting the file and the thread it ran on; `delay` before each (a slow disk)."""

    def __init__(self, delay=0.0):
        super().__init__()
        self.delay, self.threads = delay, []

    def write_at(self, path, offset, data):
        time.sleep(self.delay)
        self.threads.append((os.path.basename(path), threading.current_thread().name))
        super().write_at(path, offset, data)


@pytest.mark.parametrize("here, delay, on_socket", [(True, 0.0, 14), (True, 0.05, 2), (False, 0.0, 0)])
def test_small_files_are_written_by_the_thread_that_receives_them_while_writes_are_quick(
        sealed_worker, tmp_path, monkeypatch, here, delay, on_socket):
    """With few cores a fetched frame is written (and renamed) by the socket's thread itself; two slow writes
    hand the rest of the fetch to the writer thread, and a plate's 4 MiB pieces always go to it."""
    from scail2.core import downloads

    monkeypatch.setattr(downloads.WritesHere, "QUICK_S", 0.01)  # quick: a busy test machine's 1 ms is not slow
    served = sealed_worker["worker_dir"] / "jobs" / "written_here_{}_{}".format(here, delay)
    (served / "frames").mkdir(parents=True)
    for k in range(13):
        (served / "frames" / "frame_{:06d}.png".format(k)).write_bytes(os.urandom(40_000 + 9_000 * k))
    (served / "plate.bin").write_bytes(os.urandom((4 << 20) + 5000))
    (served / "manifest.json").write_text("{}")
    client = WorkerClient.connect("127.0.0.1", sealed_worker["port"], token=sealed_worker["token"],
                                  fingerprint=sealed_worker["fingerprint"], timeout=120)
    disk = ThreadNoting(delay)
    try:
        transfers = client.transfers
        transfers.background, transfers.write_files_here = direct_io.BackgroundWriter(disk), here
        transfers.fetch_folder(str(served), str(tmp_path / "local"))
    finally:
        client.close()
    names = sorted(str(p.relative_to(served)) for p in served.rglob("*") if p.is_file())
    local = tmp_path / "local"
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == names
    for name in names:
        assert (tmp_path / "local" / name).read_bytes() == (served / name).read_bytes(), name
    threads = [thread for _name, thread in disk.threads]
    assert threads.count("scail2-client-socket") == on_socket
    assert [thread for name, thread in disk.threads if name == ".plate.bin.part"][0] == "scail2-writer"
    if on_socket:  # the first files written here, the rest (after two slow ones) by the writer
        assert threads[:on_socket] == ["scail2-client-socket"] * on_socket
