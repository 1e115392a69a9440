"""The run root is a boundary: the agent (which runs the same code on every machine), the local
provider and code sync refuse what the spec check cannot see (symlinks already on the machine,
hostile requests, a state edited by hand)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from runform.agent.ops import handle
from runform.codesync import local_manifest
from runform.interfaces import InstanceInfo, ProviderContext
from runform.rootpath import OutsideRootError, check_name, problem, resolve_inside

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / ".runform").mkdir(parents=True)
    (r / ".runform" / "secrets.env").write_text("TOKEN=s3cr3t-value\n")
    (r / "data" / "set").mkdir(parents=True)
    (r / "data" / "set" / "names.txt").write_text("ada\n")
    (tmp_path / "victim.txt").write_text("untouched\n")
    return r


def _outside(tmp_path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}


@pytest.mark.parametrize("rel, why", [
    ("/etc/passwd", "absolute"),
    ("../x", "'..'"),
    ("a/../../x", "'..'"),
    (".runform", "runform's own folder"),
    ("./.runform/secrets.env", "runform's own folder"),
    ("a//./.runform/../b", "'..'"),
    ("out/\0x", "control character"),
    ("out/x\ny", "control character"),
    ("", "empty"),
])
def test_problem_names_what_is_wrong(rel: str, why: str) -> None:
    assert why in (problem(rel) or "")


def test_plain_paths_pass() -> None:
    for rel in ("out/model.pt", "data/x", ".", "a/./b", ".hidden/file", ".runformish"):
        assert problem(rel) is None, rel


def test_resolve_refuses_a_symlink_that_leaves_the_root(root: Path, tmp_path: Path) -> None:
    os.symlink("../../", root / "esc")
    with pytest.raises(OutsideRootError, match="esc is a symlink that leads outside the run root"):
        resolve_inside(str(root), "esc/sub", what="dest")
    os.symlink(".runform", root / "meta")
    with pytest.raises(OutsideRootError, match="symlink into .runform/"):
        resolve_inside(str(root), "meta/secrets.env", what="artifact path")
    os.symlink("data/set", root / "inside")
    assert resolve_inside(str(root), "inside/names.txt", what="x") == str(root.resolve() / "data/set/names.txt")
    # the last component is not followed when asked (a link about to be replaced)
    assert resolve_inside(str(root), "esc", what="link", follow_last=False) == str(root.resolve() / "esc")


@pytest.mark.parametrize("label", ["../../../VICTIM_DIR", "/../../.", "a/b", "..", ".", "", None, 7])
def test_check_name_refuses_paths(label: object) -> None:
    with pytest.raises(OutsideRootError, match="not a valid name"):
        check_name(label, what="machine label")


def _links(root: Path, links: dict[str, str], dest: str = "data/set") -> dict:
    manifest = {"uri": "file:///nowhere", "entries": [["names.txt", 4, "sha256:x"]]}
    return handle({"op": "record_dataset", "root": str(root), "name": "set", "dest": dest, "links": links,
                   "manifest": manifest, "digest": "sha256:x"})


@pytest.mark.parametrize("links, dest, words", [
    ({"/tmp/victim.txt": "names.txt"}, "data/set", "absolute path"),
    ({"../victim.txt": "names.txt"}, "data/set", "'..'"),
    ({"data/n.txt": "/etc/hostname"}, "data/set", "absolute path"),
    ({"data/n.txt": "../../../victim.txt"}, "data/set", "'..'"),
    ({"data/n.txt": "../other"}, "data/set", "'..'"),
    ({".runform/x": "names.txt"}, "data/set", "runform's own folder"),
    ({"data/set/self": "names.txt"}, "data/set", "inside the dataset's dest"),
    ({"n.txt": "names.txt"}, ".runform", "runform's own folder"),
])
def test_the_agent_refuses_links_and_dests_that_leave(root: Path, tmp_path: Path, links: dict, dest: str,
                                                      words: str) -> None:
    before = _outside(tmp_path)
    r = _links(root, links, dest)
    assert r["ok"] is False and words in r["error"], r
    assert r["hint"]  # a refusal carries its fix
    assert _outside(tmp_path) == before
    assert not (tmp_path / "victim.txt").is_symlink()


def test_a_dest_through_an_escaping_link_is_refused(root: Path, tmp_path: Path) -> None:
    """The issue's bypass: one dataset's link points outside, a second dataset's dest goes through it."""
    os.symlink("../../../../../../OUTSIDE", root / "esc")
    r = _links(root, {}, dest="esc/sub")
    assert r["ok"] is False and "symlink that leads outside the run root" in r["error"]
    r = handle({"op": "hydrate", "root": str(root), "name": "set", "dest": "esc/sub", "links": {},
                "manifest": {"uri": "file:///nowhere", "entries": []}})
    assert r["ok"] is False and "outside the run root" in r["error"]
    assert not Path("/OUTSIDE").exists()


def test_a_target_through_a_symlink_out_of_dest_is_refused(root: Path) -> None:
    os.symlink("..", root / "data" / "set" / "up")
    r = _links(root, {"data/n.txt": "up/other.txt"})
    assert r["ok"] is False and "outside the dataset's dest" in r["error"], r


def test_a_link_that_is_a_file_is_not_replaced(root: Path) -> None:
    (root / "data" / "n.txt").write_text("mine\n")
    r = _links(root, {"data/n.txt": "names.txt"})
    assert r["ok"] is False and "not a symlink" in r["error"]
    assert (root / "data" / "n.txt").read_text() == "mine\n"
    assert _links(root, {"data/ok.txt": "names.txt"})["ok"] is True
    assert (root / "data" / "ok.txt").read_text() == "ada\n"


def test_hostile_names_from_a_request_are_refused(root: Path) -> None:
    r = handle({"op": "tail", "root": str(root), "stage": "../../x"})
    assert r["ok"] is False and "not a valid name" in r["error"]
    r = handle({"op": "metrics", "root": str(root), "stage": "s", "fingerprint": "sha256:ab",
                "metrics_file": "../victim.txt"})
    assert r["ok"] is False and "'..'" in r["error"]
    r = handle({"op": "remove", "root": str(root), "meta": ["../../victim.txt"]})
    assert r["ok"] is False
    assert (root.parent / "victim.txt").exists()


def test_an_artifact_of_the_root_never_takes_runform_files(root: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    (root / "out").mkdir()
    (root / "out" / "model.bin").write_bytes(b"weights")
    os.symlink("../.runform/secrets.env", root / "out" / "sneaky")
    os.symlink(str(tmp_path / "victim.txt"), root / "out" / "outside")
    r = handle({"op": "push", "root": str(root), "to": store.as_uri(), "paths": ["."]})
    assert r.get("ok") is True, r
    pushed = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    assert "out/model.bin" in pushed
    assert not [p for p in pushed if ".runform" in p or p.startswith("out/sneaky") or p == "out/outside"], pushed
    assert not any(b"s3cr3t-value" in p.read_bytes() for p in store.rglob("*") if p.is_file())
    r = handle({"op": "push", "root": str(root), "to": store.as_uri(), "paths": ["out/sneaky"]})
    assert r["ok"] is False and "refused" in r["error"]


def test_local_provider_never_names_a_folder_outside_by_a_label(tmp_path: Path) -> None:
    from providers.local import LocalProvider

    ctx = ProviderContext(state_dir=tmp_path / "p" / ".runform", run="hello", lineage="abcd1234",
                          log=lambda _m: None)
    (tmp_path / "VICTIM_DIR").mkdir()
    bad = InstanceInfo(id="x", label="../../../VICTIM_DIR", status="running")
    with pytest.raises(OutsideRootError):
        LocalProvider().destroy(bad, ctx)
    assert (tmp_path / "VICTIM_DIR").is_dir()


def test_code_sync_never_takes_the_env_file_by_identity(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print(1)\n")
    env = code / "hello[1].env"  # glob characters in the name: a glob exclude would miss it
    env.write_text("TOKEN=s3cr3t-value\n")
    outside = tmp_path / "secrets.env"
    outside.write_text("TOKEN=other-s3cr3t\n")
    os.symlink(outside, code / "linked.env")  # a symlink to a secret file outside the tree
    os.link(env, code / "hardlink.txt")  # the same file under another name
    (code / ".runform").mkdir()
    os.symlink(".runform", code / "meta")
    (code / ".runform" / "secrets.env").write_text("TOKEN=s3cr3t-value\n")
    paths = [e.path for e in local_manifest(code, never=[env, outside]).entries]
    assert paths == ["train.py"], paths


def test_remote_manifest_request_json_is_json(root: Path) -> None:
    """Sanity: a well-formed request still works (the checks do not refuse the ordinary case)."""
    r = handle({"op": "status", "root": str(root), "stages": {}, "paths": ["out/x", "../victim.txt"],
                "datasets": {}})
    assert r["ok"] is True and r["exists"] == {"out/x": False, "../victim.txt": False}
    json.dumps(r)


def test_an_ssh_root_edited_in_the_state_is_refused(hello: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The state names the machine's root; a state edited to another folder (the home folder, say)
    would make code sync write there. The ssh provider compares it with the root it created."""
    import yaml
    from helpers import run_cli

    from runform.testing.sshd import SSHD

    if not SSHD.available():
        pytest.skip("openssh-server is not installed")
    sshd = request.getfixturevalue("sshd")
    root = tmp_path / "remote" / "hello"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    other = tmp_path / "elsewhere"
    other.mkdir()
    state_file = hello / ".runform" / "state.json"
    state = json.loads(state_file.read_text())
    for r in state["resources"]:
        if r["address"] == "instance.main":
            r["attrs"]["instance"]["attrs"]["root"] = str(other)
    state_file.write_text(json.dumps(state))
    p = run_cli("apply", "--auto-approve", cwd=hello)
    assert p.returncode == 1 and "but it was created at" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert list(other.iterdir()) == []
