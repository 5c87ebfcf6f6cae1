"""Calls a test makes at the same time, each on a thread of its own. Shared by both test worlds
(`tests/conftest.py` puts this folder on sys.path), like `process_guard`."""

import threading


def at_once(call, arguments, timeout=120.0):
    """``call(argument)`` for every argument, all started together; their results, in order. An exception
    raised in any of them is raised again here, in the test's thread, once every call has ended."""
    results, failures = [None] * len(arguments), []

    def run(index, argument):
        try:
            results[index] = call(argument)
        except BaseException as exc:  # noqa: BLE001 (raised again below)
            failures.append(exc)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in enumerate(arguments)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError("a call made at once with others did not end within {:g} s".format(timeout))
    if failures:
        raise failures[0]
    return results
