"""Request-path normalisation: a table of cases per rule, then properties checked
against a deliberately naive reference (urllib's decoder + RFC 3986 5.2.4 as
the RFC writes it), so that no encoding makes the gateway see one path while
a decoding upstream sees another."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.path import KEEP, REJECT, UNESCAPE_FORWARD, UNESCAPE_REDIRECT, PathError, normalize

MODES = (KEEP, REJECT, UNESCAPE_FORWARD, UNESCAPE_REDIRECT)
R = UNESCAPE_REDIRECT  # the default
ERR = PathError

# (path, escaped_slashes, merge_slashes, expected): expected is the path (and
# no redirect), (path, redirect), or PathError.
CASES = [
    # already normal: unchanged
    (b"/", R, True, b"/"),
    (b"/api/v1/users/42", R, True, b"/api/v1/users/42"),
    (b"/a/b/", R, True, b"/a/b/"),
    (b"/.well-known/acme", R, True, b"/.well-known/acme"),  # a dot starts it, but not a dot segment
    (b"/a/.../.b/..c", R, True, b"/a/.../.b/..c"),
    (b"/a!$&'()*+,;=:@b", R, True, b"/a!$&'()*+,;=:@b"),  # sub-delims, ':' and '@' are path characters
    # dot segments, RFC 3986 5.2.4
    (b"/a/./b", R, True, b"/a/b"),
    (b"/a/../b", R, True, b"/b"),
    (b"/../a", R, True, b"/a"),
    (b"/../../../a", R, True, b"/a"),
    (b"/a/b/..", R, True, b"/a/"),
    (b"/a/b/.", R, True, b"/a/b/"),
    (b"/.", R, True, b"/"),
    (b"/..", R, True, b"/"),
    (b"/a/b/../../..", R, True, b"/"),
    (b"/a/./", R, True, b"/a/"),
    # bypass attempts
    (b"/public/../admin", R, True, b"/admin"),
    (b"/public/%2e%2e/admin", R, True, b"/admin"),
    (b"/public/%2E%2e/admin", R, True, b"/admin"),
    (b"/public/.%2e/admin", R, True, b"/admin"),
    (b"/public/%2e./admin", R, True, b"/admin"),
    (b"/.%2e/admin", R, True, b"/admin"),
    (b"/public/./../admin", R, True, b"/admin"),
    (b"/public\\..\\admin", R, True, b"/admin"),
    (b"/public/..\\admin", KEEP, True, b"/admin"),  # a literal backslash is a separator in every mode
    (b"//admin", R, True, b"/admin"),
    (b"/\\admin", R, True, b"/admin"),
    (b"/public/%61dmin", R, True, b"/public/admin"),  # unreserved letters are decoded
    (b"/%2e%2e/%2e%2e/admin", R, True, b"/admin"),
    # escaped slashes under each action
    (b"/public%2f..%2fadmin", KEEP, True, b"/public%2F..%2Fadmin"),  # one segment, not a dot segment
    (b"/public%2f..%2fadmin", REJECT, True, ERR),
    (b"/public%2f..%2fadmin", UNESCAPE_FORWARD, True, (b"/admin", False)),
    (b"/public%2f..%2fadmin", UNESCAPE_REDIRECT, True, (b"/admin", True)),
    (b"/public%5c..%5Cadmin", KEEP, True, b"/public%5C..%5Cadmin"),
    (b"/public%5c..%5Cadmin", REJECT, True, ERR),
    (b"/public%5c..%5Cadmin", UNESCAPE_FORWARD, True, (b"/admin", False)),
    (b"/public%5c..%5Cadmin", UNESCAPE_REDIRECT, True, (b"/admin", True)),
    (b"/a%2Fb", KEEP, True, b"/a%2Fb"),  # does not match a route /a/b; forwarded as is
    (b"/a%2fb", UNESCAPE_FORWARD, True, b"/a/b"),
    (b"/a%2fb%3f", UNESCAPE_REDIRECT, True, (b"/a/b%3F", True)),
    (b"/a%2F%2e%2e", KEEP, True, b"/a%2F.."),
    (b"/%2F%2Fadmin", UNESCAPE_FORWARD, True, b"/admin"),  # decoded slashes are merged too
    (b"/%2F%2Fadmin", UNESCAPE_FORWARD, False, b"///admin"),
    (b"/public/%2e%2e/admin", REJECT, True, b"/admin"),  # reject is only about slashes
    (b"/a/../b", UNESCAPE_REDIRECT, True, (b"/b", False)),  # dot segments never redirect
    # malformed escapes and control characters: 400
    (b"/a%", R, True, ERR),
    (b"/a%2", R, True, ERR),
    (b"/%zz", R, True, ERR),
    (b"/%g0", R, True, ERR),
    (b"/%%32%65", R, True, ERR),  # a nested escape is malformed, never decoded twice
    (b"/%00", R, True, ERR),
    (b"/%0a", R, True, ERR),
    (b"/a%0D%0Ab", KEEP, True, ERR),
    (b"/%1F", R, True, ERR),
    (b"/%7f", R, True, ERR),
    (b"/a\x00b", R, True, ERR),
    (b"/a\tb", R, True, ERR),
    (b"/a\x7f", R, True, ERR),
    # other escapes: unreserved decoded, the rest kept with upper-case hex
    (b"/%41%42c", R, True, b"/ABc"),
    (b"/%7e%5F%2D%30", R, True, b"/~_-0"),
    (b"/%3f", R, True, b"/%3F"),
    (b"/%23", R, True, b"/%23"),
    (b"/a%20b", R, True, b"/a%20b"),
    (b"/%e2%82%ac", R, True, b"/%E2%82%AC"),
    (b"/%252e%252e/admin", R, True, b"/%252e%252e/admin"),  # one decoding pass only
    (b"/%2e", R, True, b"/"),
    # raw bytes RFC 3986 disallows in a path are encoded: the spelling routes use
    (b"/caf\xc3\xa9", R, True, b"/caf%C3%A9"),  # httptools refuses these today; no matter
    (b"/caf%c3%a9", R, True, b"/caf%C3%A9"),  # ... so both spellings meet
    (b"/a b<c>", R, True, b"/a%20b%3Cc%3E"),
    (b'/[x]"^`{|}', R, True, b"/%5Bx%5D%22%5E%60%7B%7C%7D"),
    (b"/a#frag", R, True, ERR),  # a request target has no fragment (httptools passes it on)
    (b"/a%23frag", R, True, b"/a%23frag"),
    (b"/a/%2E", R, True, b"/a/"),
    # merge_slashes
    (b"/a//b///c", R, True, b"/a/b/c"),
    (b"/a//b///c", R, False, b"/a//b///c"),
    (b"//", R, True, b"/"),
    (b"/a/b//", R, True, b"/a/b/"),
    (b"/a//../b", R, True, b"/b"),  # merged first, then resolved
    (b"/a//../b", R, False, b"/a/b"),  # RFC 3986: '..' removes the empty segment
    # not origin-form
    (b"", R, True, ERR),
    (b"a/b", R, True, ERR),
    (b"\\admin", R, True, ERR),
    # a path parameter on a dot segment: Tomcat reads "..;" as "..", so refused
    (b"/public/..;/admin", R, True, ERR),
    (b"/public/%2e%2e;x/admin", R, True, ERR),
    (b"/public/.;/admin", UNESCAPE_FORWARD, True, ERR),
    (b"/public/%2F..;/admin", KEEP, True, b"/public/%2F..;/admin"),  # under keep, one segment
    (b"/public/a..;/admin", R, True, b"/public/a..;/admin"),  # not a dot segment
]


@pytest.mark.parametrize("path, action, merge, expected", CASES,
                         ids=[f"{p!r}-{a}-{'merge' if m else 'nomerge'}" for p, a, m, _ in CASES])
def test_path_normalises_as_the_table_says(path, action, merge, expected):
    if expected is ERR:
        with pytest.raises(PathError):
            normalize(path, action, merge)
        return
    if isinstance(expected, bytes):
        expected = (expected, False)
    assert normalize(path, action, merge) == expected


def test_path_table_covers_every_action():
    assert {a for _, a, _, _ in CASES} == set(MODES)


def test_path_already_normal_is_returned_as_the_same_object():
    for path in (b"/", b"/api/v1/users/42", b"/a/b/", b"/x-y_z~/1.2/file.tar.gz"):
        out, redirect = normalize(path)
        assert out is path and redirect is False


def test_path_default_action_is_unescape_redirect_with_merging():
    assert normalize(b"/a%2F%2Fb") == (b"/a/b", True)


def test_path_unknown_action_is_a_value_error_not_a_400():
    with pytest.raises(ValueError) as info:
        normalize(b"/a%2Fb", "unescape")
    assert not isinstance(info.value, PathError)


def test_path_error_is_a_value_error():
    assert issubclass(PathError, ValueError)


# --- properties -----------------------------------------------------------------

# Single bytes that matter, so generated paths hit every rule (and malformed
# escapes, controls, non-ASCII) far more often than random bytes would.
_ATOMS = [b"/", b"/", b".", b".", b"%", b"\\", b"a", b"2", b"e", b"E", b"f", b"F", b"5", b"c",
          b"0", b"~", b";", b"?", b"\x00", b"\n", b"\xff", b" ", b"<", b"[", b"#",
          b"%2e", b"%2F", b"%5c", b"%25", b"%41"]
any_paths = st.lists(st.sampled_from(_ATOMS), max_size=24).map(lambda atoms: b"/" + b"".join(atoms))
modes = st.sampled_from(MODES)

# Segments of /public/... with the usual tricks around them.
_TOKENS = [b"public", b"admin", b"adm%69n", b"%61dmin", b"%41dmin", b".", b"..", b"%2e", b"%2E",
           b".%2e", b"%2e.", b"%2E%2e", b"", b"...", b"..;", b"%252e", b"%3F", b"x", b"%7E"]
_SEPARATORS = [b"/", b"/", b"//", b"\\", b"%2f", b"%2F", b"%5c", b"%5C", b"/./", b"/../", b"/%2e%2e/"]
trick_paths = st.lists(st.tuples(st.sampled_from(_SEPARATORS), st.sampled_from(_TOKENS)), max_size=8).map(
    lambda pairs: b"/public" + b"".join(s + t for s, t in pairs))

_SLASH_ESCAPE = re.compile(rb"%(2[fF]|5[cC])")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_ONLY_PATH_BYTES = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")  # RFC 3986 path, raw
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _remove_dot_segments(inp: bytes) -> bytes:
    """RFC 3986 5.2.4, step by step as the RFC writes it."""
    out = b""
    while inp:
        if inp.startswith(b"../"):
            inp = inp[3:]
        elif inp.startswith(b"./"):
            inp = inp[2:]
        elif inp.startswith(b"/./"):
            inp = inp[2:]
        elif inp == b"/.":
            inp = b"/"
        elif inp.startswith(b"/../") or inp == b"/..":
            inp = b"/" + inp[4:]
            cut = out.rfind(b"/")
            out = out[:cut] if cut >= 0 else b""
        elif inp in (b".", b".."):
            inp = b""
        else:
            end = inp.find(b"/", 1)
            end = len(inp) if end < 0 else end
            out, inp = out + inp[:end], inp[end:]
    return out


def _decode(path: bytes, slashes: bool) -> bytes:
    """Every escape decoded; with ``slashes`` false, %2F and %5C become an
    opaque NUL-led token instead (data, not separators), as under ``keep``."""
    if not slashes:
        path = _SLASH_ESCAPE.sub(lambda m: b"\x00" + m.group(1).upper(), path)
    return unquote_to_bytes(path)


def reference(path: bytes, action: str, merge: bool) -> bytes:
    """What a careful upstream that decodes everything makes of ``path``."""
    path = _decode(path, action != KEEP).replace(b"\\", b"/")
    if merge:
        path = re.sub(rb"/+", b"/", path)
    return _remove_dot_segments(path)


def should_fail(path: bytes, action: str) -> bool:
    if not path.startswith(b"/") or _CONTROL.search(path) or b"#" in path:
        return True
    if re.search(rb"%(?![0-9A-Fa-f]{2})", path):
        return True
    if _CONTROL.search(unquote_to_bytes(path)):
        return True
    if action == REJECT and _SLASH_ESCAPE.search(path) is not None:
        return True
    return _dot_parameter(path, action)


def _dot_parameter(path: bytes, action: str) -> bool:
    """A segment, once decoded, that starts '..;' or '.;' (refused)."""
    if action == KEEP:  # escaped slashes are data, not separators
        path = _SLASH_ESCAPE.sub(b"%%25", path)
    decoded = unquote_to_bytes(path).replace(b"\\", b"/")
    return any(seg[:2] == b".;" or seg[:3] == b"..;" for seg in decoded.split(b"/"))


@settings(max_examples=200, deadline=None)
@given(any_paths, modes, st.booleans())
def test_path_fails_exactly_for_bad_escapes_controls_fragments_rejected_slashes(path, action, merge):
    try:
        normalize(path, action, merge)
    except PathError:
        assert should_fail(path, action)
    else:
        assert not should_fail(path, action)


@settings(max_examples=200, deadline=None)
@given(st.one_of(any_paths, trick_paths), modes, st.booleans())
def test_path_normalising_is_idempotent(path, action, merge):
    try:
        once, _ = normalize(path, action, merge)
    except PathError:
        return
    assert normalize(once, action, merge) == (once, False)


@settings(max_examples=200, deadline=None)
@given(st.one_of(any_paths, trick_paths), modes, st.booleans())
def test_path_output_has_no_dot_segment_control_or_merged_away_slash(path, action, merge):
    try:
        out, redirect = normalize(path, action, merge)
    except PathError:
        return
    assert out.startswith(b"/")
    assert b"/./" not in out and b"/../" not in out
    assert not out.endswith(b"/.") and not out.endswith(b"/..")
    assert _ONLY_PATH_BYTES.fullmatch(out) and not _CONTROL.search(unquote_to_bytes(out))
    assert not merge or b"//" not in out
    for escape in re.findall(rb"%..", out):  # canonical escapes only
        assert escape == escape.upper() and int(escape[1:], 16) not in _UNRESERVED
    if action != KEEP:
        assert not _SLASH_ESCAPE.search(out)
    assert redirect == (action == UNESCAPE_REDIRECT and _SLASH_ESCAPE.search(path) is not None)


@settings(max_examples=300, deadline=None)
@given(trick_paths, st.sampled_from((KEEP, UNESCAPE_FORWARD, UNESCAPE_REDIRECT)), st.booleans())
def test_path_reaches_admin_only_when_the_decoded_resolved_path_does(path, action, merge):
    # Under keep the reference, too, reads %2F and %5C as data: that is what
    # keep means (and why an upstream that decodes them needs another action).
    if _dot_parameter(path, action):
        with pytest.raises(PathError):
            normalize(path, action, merge)
        return
    out, _ = normalize(path, action, merge)
    expected = reference(path, action, merge)
    assert out.startswith(b"/admin") == expected.startswith(b"/admin")
    assert _decode(out, action != KEEP) == expected


@settings(max_examples=200, deadline=None)
@given(any_paths, modes, st.booleans())
def test_path_agrees_with_the_reference_on_any_valid_path(path, action, merge):
    try:
        out, _ = normalize(path, action, merge)
    except PathError:
        return
    assert _decode(out, action != KEEP) == reference(path, action, merge)


@given(st.integers(0, 6), st.lists(st.sampled_from([b"a", b"b", b"..", b"%2e%2e", b"."]), max_size=6))
def test_path_dot_segments_never_climb_above_root(ups, segments):
    tail = b"".join(b"/" + seg for seg in segments)
    out, _ = normalize(b"/.." * ups + tail or b"/")
    # Leading ".." segments climb nowhere: the root is its own parent.
    assert out == normalize(tail or b"/")[0]
    stack: list[bytes] = []
    for seg in segments:
        if seg in (b"..", b"%2e%2e"):
            stack = stack[:-1]
        elif seg != b".":
            stack.append(seg)
    trailing = b"/" if stack and segments[-1] in (b".", b"..", b"%2e%2e") else b""
    assert out == b"/" + b"/".join(stack) + trailing


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), modes, st.booleans())
def test_path_raises_nothing_but_path_error_on_arbitrary_bytes(tail, action, merge):
    try:
        out, _ = normalize(b"/" + tail, action, merge)
    except PathError:
        return
    assert out.startswith(b"/")
