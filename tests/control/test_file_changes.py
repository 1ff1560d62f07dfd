"""FileSource.changes(): incremental reads, per-object events, last good versions kept."""

from __future__ import annotations

import os

import pytest
import yaml

from control.cache import ObjectCache
from control.objects.resources import ObjectKey
from control.sources import files
from control.sources.files import FileSource
from control.translate import Memo, translate
from tests.control.test_object_cache import GATEWAY as GATEWAY_AT, ROUTE

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: %s}
spec: {ports: [{port: %d}]}
"""
GATEWAY = GATEWAY_AT % 8080


def _svc(*specs: tuple[str, int]) -> str:
    return "---\n".join(SERVICE % spec for spec in specs)


def _names(objs) -> list[str]:
    return [o.name for o in objs]


def _rewrite(path, text: str) -> None:
    """Write ``text`` and make sure the (mtime, size, inode) mark differs."""
    st = os.stat(path) if path.exists() else None
    path.write_text(text)
    if st is not None:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _parsed(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = files._parse
    monkeypatch.setattr(files, "_parse", lambda path, *args: seen.append(os.path.basename(path))
                        or real(path, *args))
    return seen


def test_file_changes_first_everything_then_only_what_changed(write, tmp_path, monkeypatch):
    write("a.yaml", _svc(("a1", 80), ("a2", 80)))
    write("b.yaml", _svc(("b1", 80)))
    source = FileSource(tmp_path)
    first = source.changes()
    assert _names(first.upserts) == ["a1", "a2", "b1"] and first.deletes == []
    parsed = _parsed(monkeypatch)
    nothing = source.changes()
    assert (nothing.upserts, nothing.deletes, parsed) == ([], [], [])

    _rewrite(tmp_path / "a.yaml", _svc(("a1", 81), ("a3", 80)))
    ch = source.changes()
    assert parsed == ["a.yaml"]  # b.yaml is not read again
    assert _names(ch.upserts) == ["a1", "a3"] and _names(ch.deletes) == ["a2"]
    assert ch.upserts[0].raw["spec"]["ports"][0]["port"] == 81


def test_file_changes_a_touched_file_is_not_parsed_again(write, tmp_path, monkeypatch):
    path = write("a.yaml", _svc(("a1", 80)))
    source = FileSource(tmp_path)
    source.changes()
    parsed = _parsed(monkeypatch)
    _rewrite(path, path.read_text())  # same content, new mtime
    ch = source.changes()
    assert (ch.upserts, ch.deletes, ch.errors, parsed) == ([], [], [], [])


def test_file_changes_removed_file_deletes_its_objects_missing_root_keeps_all(write, tmp_path):
    write("conf/a.yaml", _svc(("a1", 80)))
    write("conf/b.yaml", _svc(("b1", 80)))
    source = FileSource(tmp_path / "conf")
    source.changes()
    (tmp_path / "conf" / "b.yaml").unlink()
    assert _names(source.changes().deletes) == ["b1"]
    os.rename(tmp_path / "conf", tmp_path / "gone")
    ch = source.changes()
    assert (ch.upserts, ch.deletes) == ([], [])
    assert "cannot read" in str(ch.errors[0]) and source.failed == {str(tmp_path / "conf")}
    assert source.changes().errors == []  # reported once
    assert [str(p) for p in source.problems()] == [str(ch.errors[0])]


def test_file_changes_a_document_without_identity_keeps_the_files_last_good_version(write, tmp_path):
    # Defect 2: one bad document used to remove every object of its file.
    path = write("gw.yaml", GATEWAY + "---\n" + _svc(("web", 80)))
    source = FileSource(tmp_path)
    source.changes()
    for bad in (GATEWAY.replace("metadata: {name: gw}", "metadata: {}"), "- a list\n",
                "kind: List\napiVersion: v1\nitems: {a: 1}\n", "kind: [unclosed\n"):
        _rewrite(path, bad + "---\n" + _svc(("web", 81), ("new", 80)))
        ch = source.changes()
        assert (ch.upserts, ch.deletes) == ([], []), bad  # nothing of the file changes
        assert len(ch.errors) == 1 and str(path) in str(ch.errors[0])
        assert source.failed == {str(path)}
        assert source.problems() == ch.errors
    _rewrite(path, GATEWAY + "---\n" + _svc(("web", 81)))
    ch = source.changes()
    assert _names(ch.upserts) == ["web"] and ch.errors == [] and source.problems() == []


def test_file_changes_duplicates_first_in_path_order_wins(write, tmp_path):
    write("a.yaml", _svc(("web", 80)))
    write("b.yaml", _svc(("web", 81)))
    source = FileSource(tmp_path)
    ch = source.changes()
    [web] = ch.upserts
    assert web.file == str(tmp_path / "a.yaml")
    [dup] = ch.errors
    assert str(dup).startswith(f"{tmp_path}/b.yaml (document 1) Service default/web: ignored: "
                               f"duplicate of the one in {tmp_path}/a.yaml (document 1)")
    (tmp_path / "a.yaml").unlink()
    ch = source.changes()
    [web] = ch.upserts  # the other copy takes over, whole (read again: it was kept light)
    assert web.file == str(tmp_path / "b.yaml") and ch.deletes == [] and ch.errors == []
    assert web.raw["spec"]["ports"][0]["port"] == 81


def test_file_changes_keep_only_identities_of_what_they_hand_out(write, tmp_path):
    # The source does not hold every raw document: the cache parsed them.
    write("a.yaml", _svc(("a1", 80), ("a2", 80)))
    source = FileSource(tmp_path)
    assert all("spec" in o.raw for o in source.changes().upserts)
    kept = [o for f in source._files.values() for objs in f.objects.values() for o in objs]
    assert len(kept) == 2 and all(set(o.raw) == {"apiVersion", "kind", "metadata"} for o in kept)


def test_file_changes_keep_unchanged_objects_so_translation_reuses_their_routes(write, tmp_path):
    write("a-gw.yaml", GATEWAY + "---\n" + _svc(("web", 80)))
    for f in range(5):
        write(f"r{f}.yaml", "---\n".join(ROUTE % (f"r{f}-{i}", f"/p{f}-{i}") for i in range(10)))
    source = FileSource(tmp_path)
    cache, memo = ObjectCache(), Memo()
    ch = source.changes()
    cache.apply_changes(ch.upserts, ch.deletes)
    translate(cache.objects(), memo=memo)
    edited = ObjectKey("HTTPRoute", "default", "r3-5")
    before = {obj.key: obj for obj in cache.objects() if obj.key != edited}

    _rewrite(tmp_path / "r3.yaml", (tmp_path / "r3.yaml").read_text().replace("/p3-5", "/edited"))
    ch = source.changes()
    assert _names(ch.upserts) == ["r3-5"]
    assert cache.apply_changes(ch.upserts, ch.deletes)
    for key, obj in before.items():
        assert cache.get(key) is obj  # by identity: the memo knows it
    assert cache.get(edited) is not None and len(before) == len(cache) - 1
    result = translate(cache.objects(), memo=memo)
    assert (memo.routes.reused, memo.routes.computed) == (49, 1)
    assert "/edited" in repr(result.ir)


def test_file_changes_an_edit_parses_only_the_documents_that_changed(write, tmp_path, monkeypatch):
    path = write("a.yaml", _svc(("a1", 80), ("a2", 80), ("a3", 80)))
    source = FileSource(tmp_path)
    source.changes()
    pieces: list[bytes] = []
    real = yaml.load_all
    monkeypatch.setattr(files.yaml, "load_all", lambda data, **kw: pieces.append(data) or real(data, **kw))
    _rewrite(path, _svc(("a1", 80), ("a2", 81), ("a3", 80)))
    ch = source.changes()
    assert _names(ch.upserts) == ["a2"] and len(pieces) == 1 and b"a2" in pieces[0]


@pytest.mark.parametrize("text", [
    "# only a comment\n---\na: 1\n---\n---\nb: [1, 2]\n",
    "a: 1\n--- {b: 2}\n--- |\n  text\n  --- not a marker\n",
    "a: 1\n...\n---\nb: 2\n...\n",
    "%YAML 1.1\n---\na: 1\n---\nb: &x 2\n",
    "---\n",
    "",
])
def test_file_documents_parsed_one_by_one_equal_the_whole_file(text):
    data = text.encode()
    whole = list(yaml.load_all(data, Loader=files._Loader))
    first = files._documents(data, {})
    assert [n for n, _, _ in first] == list(range(1, len(whole) + 1))
    assert [doc for _, _, doc in first] == whole
    known = {n: (digest, []) for n, digest, _ in first if digest is not None}
    for n, _, doc in files._documents(data, known):  # again: the known ones are not parsed
        assert doc is files._SAME if n in known else doc == whole[n - 1]


def test_file_documents_yaml_error_names_the_files_line(write, tmp_path):
    path = write("a.yaml", _svc(("a1", 80)) + "---\nkind: [unclosed\n")
    ch = FileSource(tmp_path).changes()
    [error] = ch.errors
    assert "YAML parse error at line 7" in str(error)
