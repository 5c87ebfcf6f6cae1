"""A connection's output queue (`connection.QueuedOutput`): a reply of many frames is made only as fast
as the socket takes it, events still go out between its frames, and a closed connection stops it."""

from __future__ import annotations

from backend.service.connection import JOIN_BELOW, STREAM_AHEAD_BYTES, QueuedOutput

FRAME_BYTES = 1 << 20


def numbered_frames(count: int, made: list[int], size: int = FRAME_BYTES):
    """`count` frames of `size` bytes each, noting in `made` every one made."""
    for k in range(count):
        made.append(k)
        yield f'{{"frame":{k}}}\n', bytes([k % 256]) * size


def test_a_stream_is_made_as_the_socket_takes_it_with_events_between_its_frames():
    output = QueuedOutput("test", "transfer", "127.0.0.1")
    made: list[int] = []
    output.send_stream(numbered_frames(40, made))
    first = output.take()
    assert first == b'{"frame":0}\n'  # a frame's header goes first, its payload on its own
    assert len(made) <= STREAM_AHEAD_BYTES // FRAME_BYTES + 1 < 40  # never the whole reply at once
    output.send('{"type":"progress"}\n')  # the job thread's event, while the stream is under way
    taken = [first]
    while chunk := output.take():
        taken.append(chunk)
    assert made == list(range(40))
    payloads = [chunk for chunk in taken if len(chunk) >= JOIN_BELOW]
    assert [p[0] for p in payloads] == [k % 256 for k in range(40)] and all(len(p) == FRAME_BYTES for p in payloads)
    joined = b"".join(taken)
    assert joined.count(b'{"type":"progress"}') == 1
    assert joined.index(b'{"type":"progress"}') < joined.index(b'{"frame":39}')  # not held back to the end


def test_small_frames_go_out_joined_without_waiting_for_the_whole_reply():
    output = QueuedOutput("test", "transfer", "127.0.0.1")
    made: list[int] = []
    output.send_stream(numbered_frames(2000, made, size=1000))  # a reply of 2000 small files
    first = output.take()
    assert first.startswith(b'{"frame":0}\n' + bytes([0]) * 1000 + b'{"frame":1}\n')  # one send, many frames
    assert 10 < first.count(b'{"frame":') == len(made) < 2000  # the first bytes go before the last file is read
    taken = [first]
    while chunk := output.take():
        taken.append(chunk)
    assert len(made) == 2000 and len(taken) < 20
    assert b"".join(taken) == b"".join(header.encode() + payload for header, payload in numbered_frames(2000, [], size=1000))


def test_a_closed_connection_stops_its_streams():
    output = QueuedOutput("test", "transfer", "127.0.0.1")
    made: list[int] = []
    output.send_stream(numbered_frames(40, made))
    output.send_stream(numbered_frames(5, []))
    output.take()
    output.drop_streams()
    while output.take():
        pass
    assert len(made) < 40  # the frames not made yet never are
