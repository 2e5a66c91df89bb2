"""The server's log lines are written by a thread of their own (cli._BackgroundLog): what reaches
the log is what a direct handler would have written, in order, including tracebacks, in both
formats; closing it (logging.shutdown) writes what is queued, and later records are not lost."""

from __future__ import annotations

import io
import json
import logging
import uuid

from rustbill.cli import _BackgroundLog, _JsonFormatter


def _logger(fmt: logging.Formatter) -> tuple[logging.Logger, _BackgroundLog, io.StringIO]:
    out = io.StringIO()
    direct = logging.StreamHandler(out)
    direct.setFormatter(fmt)
    handler = _BackgroundLog([direct])
    logger = logging.getLogger(f"test.background.{id(out)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger, handler, out


def test_lines_keep_their_order_arguments_and_tracebacks_in_text() -> None:
    logger, handler, out = _logger(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    args = {"n": 1}
    for i in range(200):
        logger.info("line %d of %s", i, args)
    args["n"] = 2  # (changed after the call: the line shows what it was when logged)
    logger.info("call %s of %s took %.1f ms: %r", "query_price", uuid.UUID(int=7), 1.5, None)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed %s", "here")
    handler.close()  # what logging.shutdown() does: the queue is written out
    logger.warning("after %s", "close")  # written at once, not lost
    lines = out.getvalue().splitlines()
    assert lines[:200] == [f"INFO {logger.name}: line {i} of {{'n': 1}}" for i in range(200)]
    assert lines[200] == f"INFO {logger.name}: call query_price of {uuid.UUID(int=7)} took 1.5 ms: None"
    assert lines[201] == f"ERROR {logger.name}: failed here"
    assert lines[202] == "Traceback (most recent call last):" and lines[-2] == "ValueError: boom"
    assert lines[-1] == f"WARNING {logger.name}: after close"


def test_a_traceback_stays_in_its_own_field_in_json() -> None:
    logger, handler, out = _logger(_JsonFormatter())
    try:
        raise KeyError("k")
    except KeyError:
        logger.exception("internal error in %s (ref %s)", "/x.Y/Z", "ab12")
    handler.close()
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "internal error in /x.Y/Z (ref ab12)"
    assert record["level"] == "ERROR" and record["logger"] == logger.name
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert record["exception"].endswith("KeyError: 'k'")
