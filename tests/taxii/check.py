"""Reads and writes an ewx TAXII gateway with OASIS's taxii2-client (and `requests` for
the raw HTTP details taxii2-client hides). Run by tests/tests/taxii.rs:

    python3 check.py URL USER PASSWORD EXPECTED.json

EXPECTED.json: {"read": alias, "write": alias, "ids": [...], "versioned": id,
"types": {type: count}}. Exits non-zero on the first failed check; prints a JSON summary.
"""
import json
import sys
import uuid

import requests
from taxii2client.v21 import Server, as_pages

TAXII = "application/taxii+json;version=2.1"

url, user, password, expected_file = sys.argv[1:5]
want = json.load(open(expected_file))
auth = (user, password)

server = Server(url + "/taxii2/", user=user, password=password)
assert server.title == "ewx gateway under test", server.title
assert len(server.api_roots) == 1
root = server.api_roots[0]
assert TAXII in root.versions, root.versions
cols = {c.alias: c for c in root.collections}
read, write = cols[want["read"]], cols[want["write"]]
assert read.can_read and not read.can_write
assert write.can_read and write.can_write

# every object once, in pages of 4 (a bundle's objects arrive together)
ids, pages = [], 0
for env in as_pages(read.get_objects, per_request=4):
    pages += 1
    ids += [o["id"] for o in env.get("objects", [])]
assert len(ids) == len(set(ids)), "an object was repeated"
assert sorted(ids) == sorted(want["ids"]), (sorted(ids), sorted(want["ids"]))

# the manifest, in pages of 5: the same objects, each with its date added
manifest = []
for env in as_pages(read.get_manifest, per_request=5):
    manifest += env.get("objects", [])
assert sorted(m["id"] for m in manifest) == sorted(want["ids"])
dates = [m["date_added"] for m in manifest]
assert dates == sorted(dates) and len(set(dates)) == len(dates), "dates repeat or go back"
assert all(m["media_type"].startswith("application/stix+json") for m in manifest)

# added_after is strictly after
cut = manifest[len(manifest) // 2]["date_added"]
after = []
for env in as_pages(read.get_objects, per_request=7, added_after=cut):
    after += [o["id"] for o in env.get("objects", [])]
assert sorted(after) == sorted(m["id"] for m in manifest if m["date_added"] > cut), "added_after"

# match[type]
for kind, count in want["types"].items():
    env = read.get_objects(type=kind)
    got = env.get("objects", [])
    assert len(got) == count and all(o["type"] == kind for o in got), (kind, count, len(got))

# match[spec_version], match[id] (a list)
assert len(read.get_objects(spec_version="2.1").get("objects", [])) == len(want["ids"])
assert "objects" not in read.get_objects(spec_version="2.0")
two = want["ids"][:2]
got = read.get_objects(id=",".join(two)).get("objects", [])
assert sorted(o["id"] for o in got) == sorted(two), got

# an object with two versions: the newest by default, both on request
vid = want["versioned"]
versions = read.object_versions(vid)["versions"]
assert len(versions) == 2 and versions == sorted(versions), versions
newest = read.get_object(vid)["objects"]
assert len(newest) == 1 and newest[0]["modified"] == versions[-1], newest
assert len(read.get_object(vid, version="all")["objects"]) == 2
assert read.get_object(vid, version="first")["objects"][0]["modified"] == versions[0]
assert len(read.get_object(vid, version="first,last")["objects"]) == 2
only_old = read.get_object(vid, version=versions[0])["objects"]
assert [o["modified"] for o in only_old] == [versions[0]], only_old

# the raw HTTP: date headers, media type, 406, 401, 404, 400
base = url + "/api1/collections/" + read.id
r = requests.get(base + "/objects/", params={"limit": 3}, auth=auth, headers={"Accept": TAXII})
assert r.status_code == 200 and r.headers["Content-Type"] == TAXII, r.headers
first, last = r.headers["X-TAXII-Date-Added-First"], r.headers["X-TAXII-Date-Added-Last"]
assert first == dates[0] and last == dates[2], (first, last, dates[:3])
assert r.json()["more"] is True and r.json()["next"]
r = requests.get(base + "/objects/", auth=auth, headers={"Accept": "application/xml"})
assert r.status_code == 406, r.status_code
r = requests.get(base + "/objects/", headers={"Accept": TAXII})
assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"], r.status_code
r = requests.get(base + "/objects/", auth=(user, "wrong-password-here"), headers={"Accept": TAXII})
assert r.status_code == 401, r.status_code
r = requests.get(base + "/objects/indicator--00000000-0000-4000-8000-000000000000/", auth=auth,
                 headers={"Accept": TAXII})
assert r.status_code == 404 and r.json()["http_status"] == "404", r.text
r = requests.get(base + "/objects/", params={"added_after": "yesterday"}, auth=auth,
                 headers={"Accept": TAXII})
assert r.status_code == 400, r.status_code

# writing: a read-only collection refuses, the writable one publishes as this node
new = [
    {"type": "identity", "spec_version": "2.1", "id": "identity--" + str(uuid.uuid4()),
     "created": "2026-12-01T00:00:00.000Z", "modified": "2026-12-01T00:00:00.000Z",
     "name": "PL CERT", "identity_class": "organization"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--" + str(uuid.uuid4()),
     "created": "2026-12-01T00:00:00.000Z", "modified": "2026-12-01T00:00:00.000Z",
     "name": "C2 server", "pattern": "[ipv4-addr:value = '198.51.100.7']",
     "pattern_type": "stix", "valid_from": "2026-12-01T00:00:00Z"},
]
envelope = json.dumps({"objects": new + [{"type": "note", "id": "indicator--mismatch"}]})
# (taxii2-client refuses by itself to write where can_write is false: ask over HTTP)
r = requests.post(base + "/objects/", data=envelope, auth=auth,
                  headers={"Accept": TAXII, "Content-Type": TAXII})
assert r.status_code == 403, r.status_code
r = requests.post(url + "/api1/collections/" + write.id + "/objects/", data=envelope,
                  auth=auth, headers={"Accept": TAXII, "Content-Type": "text/plain"})
assert r.status_code == 415, r.status_code
status = write.add_objects(envelope)
assert status.status == "complete", status.status
assert status.success_count == 2 and status.failure_count == 1, (status.success_count, status.failure_count)
again = root.get_status(status.id)
assert again.success_count == 2
mine = [o["id"] for o in write.get_objects().get("objects", [])]
assert sorted(mine) == sorted(o["id"] for o in new), mine

print(json.dumps({"objects": len(ids), "pages": pages, "manifest": len(manifest),
                  "after": len(after), "published": [o["id"] for o in new],
                  "status": status.id}))
