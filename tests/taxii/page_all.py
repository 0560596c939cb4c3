"""Pages a whole collection with taxii2-client and says how fast:

    python3 page_all.py URL USER PASSWORD ALIAS PER_REQUEST

Prints {"objects": n, "unique": n, "pages": p, "seconds": s}.
"""
import json
import sys
import time

from taxii2client.v21 import Server, as_pages

url, user, password, alias, per = sys.argv[1:6]
server = Server(url + "/taxii2/", user=user, password=password)
col = next(c for c in server.api_roots[0].collections if c.alias == alias)
start = time.monotonic()
ids, pages = [], 0
for env in as_pages(col.get_objects, per_request=int(per)):
    pages += 1
    ids += [o["id"] for o in env.get("objects", [])]
seconds = time.monotonic() - start
print(json.dumps({"objects": len(ids), "unique": len(set(ids)), "pages": pages, "seconds": seconds}))
