"""A small Hub-compatible HTTP server for tests, on 127.0.0.1 only.

It answers the requests huggingface_hub makes to create repos and branches, upload (regular + LFS "basic"
transfer) in single commits, and download files by branch or commit. Failures can be injected (``fail``) to check
that a broken upload leaves no half-written revision. Model repos are keyed ``owner/name``, dataset repos
``datasets/owner/name`` (``hub.files("datasets/user/results")``) and Space repos ``spaces/owner/name``; for
datasets and Spaces it also lists files (``tree``, ``paths-info``), which ``upload_folder(delete_patterns=...)``
and ``datasets.load_dataset`` ask for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO_KINDS = ("datasets", "spaces")  # repo types whose keys and URLs carry this prefix


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo -> {"commits": {oid: files}, "branches": {name: oid}}
        self.blobs: dict[str, bytes] = {}
        self.fail: dict[str, str] = {}  # "lfs" / "commit" -> "500" | "drop"
        self.unknown: list[str] = []
        self.space_sdks: dict[str, str | None] = {}  # Space repo -> the sdk it was created with
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    # -- state helpers --
    def resolve(self, repo: str, revision: str) -> str | None:
        state = self.repos.get(repo)
        if state is None:
            return None
        if revision in state["branches"]:
            return state["branches"][revision]
        return revision if revision in state["commits"] else None

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        oid = self.resolve(repo, revision)
        return dict(self.repos[repo]["commits"].get(oid, {})) if oid else {}

    def commit_count(self, repo: str) -> int:
        return len(self.repos.get(repo, {}).get("commits", {})) - 1

    def _handler(hub):  # noqa: N805 - closes over the hub
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None, content_type="application/json"):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def _drop(self):
                self.close_connection = True
                self.connection.shutdown(2)

            def _fail(self, stage) -> bool:
                mode = hub.fail.get(stage)
                if mode == "500":
                    self._body()
                    self._send(500, {"error": f"injected failure during {stage}"})
                    return True
                if mode == "drop":
                    self._body()
                    self._drop()
                    return True
                return False

            def do_HEAD(self):
                self.do_GET()

            def _listing(self, repo, revision, folder, recursive):
                """Tree entries under ``folder`` of a revision: its files and subfolders (all levels if
                ``recursive``)."""
                oid = hub.resolve(repo, revision)
                if oid is None:
                    return None
                prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
                entries, folders = [], set()
                for name, content in sorted(hub.repos[repo]["commits"][oid].items()):
                    if not name.startswith(prefix):
                        continue
                    rest = name[len(prefix):].split("/")
                    for depth in range(1, len(rest)):
                        if recursive or depth == 1:
                            folders.add(prefix + "/".join(rest[:depth]))
                    if recursive or len(rest) == 1:
                        entries.append({"type": "file", "path": name, "size": len(content),
                                        "oid": hashlib.sha1(content).hexdigest()})
                return [{"type": "directory", "path": name, "oid": "0" * 40, "size": 0}
                        for name in sorted(folders)] + entries

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                path = urllib.parse.unquote(url.path)
                parts = path.strip("/").split("/")
                if parts[0] in REPO_KINDS and len(parts) >= 6 and parts[3] == "resolve":
                    parts = [f"{parts[0]}/{parts[1]}", *parts[2:]]  # the repo key of a dataset or Space
                if len(parts) >= 4 and parts[0] == "api" and parts[1] in REPO_KINDS:
                    kind = parts[1]
                    repo = f"{kind}/" + "/".join(parts[2:4])
                    if len(parts) >= 6 and parts[4] == "tree":
                        recursive = "recursive=true" in url.query.lower() or "recursive=1" in url.query
                        listing = self._listing(repo, parts[5], "/".join(parts[6:]), recursive)
                        if listing is None:
                            return self._send(404, {"error": "Repository not found"},
                                              {"X-Error-Code": "RepoNotFound"})
                        return self._send(200, listing)
                    parts = ["api", "models", f"{kind}/" + parts[2], *parts[3:]]  # the info answer is the same
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                    oid = hub.resolve(repo, revision)
                    if oid is None:
                        code = "RepoNotFound" if repo not in hub.repos else "RevisionNotFound"
                        return self._send(404, {"error": code}, {"X-Error-Code": code})
                    content = hub.repos[repo]["commits"][oid].get(filename)
                    if content is None:
                        return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                              "X-Repo-Commit": oid})
                    etag = '"' + hashlib.sha256(content).hexdigest() + '"'
                    return self._send(200, content, {"ETag": etag, "X-Repo-Commit": oid},
                                      content_type="application/octet-stream")
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo = "/".join(parts[2:4])
                    revision = parts[5] if len(parts) > 5 and parts[4] == "revision" else "main"
                    oid = hub.resolve(repo, revision)
                    if oid is None:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    files = hub.repos[repo]["commits"][oid]
                    return self._send(200, {"id": repo, "modelId": repo, "sha": oid, "private": False,
                                            "siblings": [{"rfilename": name} for name in sorted(files)]})
                hub.unknown.append(f"GET {path}")
                return self._send(404, {"error": "not found"})

            def do_PUT(self):
                path = urllib.parse.urlparse(self.path).path
                if path.startswith("/_lfs/"):
                    if self._fail("lfs"):
                        return None
                    data = self._body()
                    oid = path.rsplit("/", 1)[1]
                    if hashlib.sha256(data).hexdigest() != oid:
                        return self._send(400, {"error": "sha256 mismatch"})
                    hub.blobs[oid] = data
                    return self._send(200, {})
                hub.unknown.append(f"PUT {path}")
                return self._send(404, {"error": "not found"})

            def do_POST(self):
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
                parts = path.strip("/").split("/")
                if path == "/api/repos/create":
                    body = json.loads(self._body() or b"{}")
                    repo = f"{body.get('organization') or 'user'}/{body['name']}"
                    url = {"url": f"{hub.endpoint}/{repo}", "name": repo}
                    if body.get("type") in ("dataset", "space"):
                        kind = f"{body['type']}s"
                        repo, url["url"] = f"{kind}/{repo}", f"{hub.endpoint}/{kind}/{repo}"
                        if kind == "spaces":
                            hub.space_sdks[repo] = body.get("sdk")
                    with hub.lock:
                        if repo in hub.repos:
                            return self._send(409, {"error": "You already created this model repo", **url})
                        initial = "0" * 40
                        hub.repos[repo] = {"commits": {initial: {}}, "branches": {"main": initial}}
                    return self._send(200, url)
                if path == "/api/validate-yaml":
                    self._body()
                    return self._send(200, {"warnings": [], "errors": []})
                if path.endswith(".git/info/lfs/objects/batch"):
                    body = json.loads(self._body())
                    objects = []
                    for item in body.get("objects", []):
                        entry = {"oid": item["oid"], "size": item["size"]}
                        if item["oid"] not in hub.blobs:
                            entry["actions"] = {"upload": {"href": f"{hub.endpoint}/_lfs/{item['oid']}"}}
                        objects.append(entry)
                    return self._send(200, {"transfer": "basic", "objects": objects},
                                      content_type="application/vnd.git-lfs+json")
                if len(parts) >= 6 and parts[0] == "api" and parts[1] in REPO_KINDS:
                    parts = ["api", "models", f"{parts[1]}/" + parts[2], *parts[3:]]  # a dataset's or Space's key
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo, action, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
                    if repo not in hub.repos:
                        self._body()
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if action == "paths-info":
                        wanted = urllib.parse.parse_qs(self._body().decode()).get("paths", [])
                        listing = self._listing(repo, revision, "", True) or []
                        return self._send(200, [entry for entry in listing if entry["path"] in wanted])
                    if action == "preupload":
                        body = json.loads(self._body())
                        modes = [{"path": f["path"], "shouldIgnore": False,
                                  "uploadMode": "lfs" if f["path"].endswith((".safetensors", ".bin", ".parquet"))
                                  else "regular"}
                                 for f in body["files"]]
                        return self._send(200, {"files": modes, "commitOid": hub.resolve(repo, revision)})
                    if action == "branch":
                        self._body()
                        state = hub.repos[repo]
                        if revision in state["branches"]:
                            return self._send(409, {"error": "Reference already exists"})
                        state["branches"][revision] = state["branches"]["main"]
                        return self._send(200, {})
                    if action == "commit":
                        if self._fail("commit"):
                            return None
                        return self._commit(repo, revision)
                hub.unknown.append(f"POST {path}")
                self._body()
                return self._send(404, {"error": "not found"})

            def _commit(self, repo, revision):
                lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
                with hub.lock:
                    state = hub.repos[repo]
                    parent = hub.resolve(repo, revision)
                    if parent is None:
                        return self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    files = dict(state["commits"][parent])
                    for line in lines:
                        key, value = line["key"], line["value"]
                        if key == "file":
                            files[value["path"]] = base64.b64decode(value["content"])
                        elif key == "lfsFile":
                            if value["oid"] not in hub.blobs:
                                return self._send(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                            files[value["path"]] = hub.blobs[value["oid"]]
                        elif key == "deletedFile":
                            files.pop(value["path"], None)
                    oid = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()))
                                       .encode() + parent.encode()).hexdigest()
                    state["commits"][oid] = files
                    state["branches"][revision] = oid
                return self._send(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid,
                                        "pullRequestUrl": None})

        return Handler
