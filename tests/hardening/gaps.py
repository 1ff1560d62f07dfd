"""KNOWN_GAPS: every hardening test that fails today because a feature is missing.

This is the data plane's to-do list for issue 4. conftest.py marks each
listed test ``xfail(strict=True)`` with its feature as the reason, so:
* a listed test that starts passing fails the run (XPASS strict): delete
  its line here in the commit that closes the gap;
* a listed id that names no test fails the run too (no stale entries).

Ids are ``<module>::<test name>``; corpus cases are
``test_corpus::test_corpus_case[<valid|invalid>/<file stem>]``.
"""

from __future__ import annotations

KNOWN_GAPS: dict[str, list[str]] = {
    # --- path normalisation -------------------------------------------------------
    "a '..;' path segment (Tomcat/Jetty read it as '..') is forwarded to the /public backend; "
    "refuse it (stricter than Envoy, which passes it too)": [
        "test_corpus::test_corpus_case[invalid/public-dot-dot-semicolon]",
    ],
    # --- request line and target ----------------------------------------------------------
    "a request line with two spaces between method and target is accepted (llhttp leniency); "
    "RFC 9112 3 allows exactly one SP": [
        "test_corpus::test_corpus_case[invalid/target-double-space]",
    ],
    # --- framing ----------------------------------------------------------------------------
    "Transfer-Encoding with a coding before the final chunked ('gzip, chunked', or 'gzip' and "
    "'chunked' on two lines) is accepted and the other coding silently dropped upstream "
    "(Envoy, nginx: 501); 'chunked ' with a trailing space is accepted while 'chunked\\t' is "
    "refused": [
        "test_corpus::test_corpus_case[invalid/te-gzip-then-chunked]",
        "test_corpus::test_corpus_case[invalid/te-two-lines-coding-then-chunked]",
        "test_corpus::test_corpus_case[invalid/te-chunked-trailing-space]",
    ],
    "after a good request, a bad pipelined one gets no 400: the good response is sent with "
    "'connection: close' and the 400 is dropped (safe; nginx answers 200 then 400)": [
        "test_corpus::test_corpus_case[invalid/pipelined-after-bad-header]",
        "test_corpus::test_corpus_case[invalid/pipelined-after-bad-request-line]",
        "test_corpus::test_corpus_case[invalid/chunk-garbage-after-body]",
    ],
    # --- Host ----------------------------------------------------------------------------------
    "an empty Host on an HTTP/1.1 request is routed (404, keep-alive) instead of 400 and close": [
        "test_corpus::test_corpus_case[invalid/host-empty]",
    ],
    "userinfo in an absolute-form target ('http://user@example.com/') is accepted": [
        "test_corpus::test_corpus_case[invalid/absolute-form-userinfo]",
    ],
    # --- Expect ----------------------------------------------------------------------------------
    "Expect: 100-continue is forwarded and never answered by the gateway: a client that waits "
    "for 100 Continue before its body (curl does) stalls until its own timeout": [
        "test_faults::test_expect_100_continue_is_answered_before_the_body",
    ],
    # --- upstream connections ----------------------------------------------------------------------
    "bytes an idle pooled upstream connection sends unasked (a second response after a "
    "complete one) are ignored and the connection is reused; close it instead, or a late "
    "extra response becomes the answer to the next request": [
        "test_faults::test_upstream_extra_bytes_after_response_are_never_relayed",
    ],
}


def reasons() -> dict[str, str]:
    """test id -> "gap: <feature>"."""
    out: dict[str, str] = {}
    for feature, ids in KNOWN_GAPS.items():
        for test_id in ids:
            if test_id in out:
                raise ValueError(f"{test_id} is listed twice in KNOWN_GAPS")
            out[test_id] = f"gap: {feature}"
    return out
