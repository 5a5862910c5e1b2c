"""Drives a real Label Studio against aelabel's ML backend, as a person would through the UI:
a project, 600 Fashion-MNIST training images (20,000 on) uploaded as tasks, the model
connected, predictions retrieved, the 300 least confident tasks annotated with their true
classes (Label Studio's own webhook sends them), training started, and predictions retrieved
again. Not part of CI (it needs Label Studio from PyPI).

Usage (see README, "Label Studio ML backend"):
  pip install label-studio requests pillow
  USE_DEFAULT_BANNED_SUBNETS=false label-studio start --port 8080 ...   # loopback backend URL
  aelabel serve --http-addr 127.0.0.1:9095 --label-studio-url http://127.0.0.1:8080 \
      --label-studio-token "$(cat PAT_FILE)"
  python docs/label_studio_real.py PAT_FILE
"""
import gzip, io, json, struct, sys, time, requests
from PIL import Image

LS = "http://127.0.0.1:8080"
AEL = "http://127.0.0.1:9095"
pat = open(sys.argv[1]).read().strip()
access = requests.post(f"{LS}/api/token/refresh/", json={"refresh": pat}).json()["access"]
H = {"Authorization": f"Bearer {access}"}
classes = json.loads(requests.get(f"{AEL}/health").text)["classes"]
choices = "".join(f'<Choice value="{c}"/>' for c in classes)
config = f'<View><Image name="image" value="$image"/><Choices name="label" toName="image">{choices}</Choices></View>'
p = requests.post(f"{LS}/api/projects", headers=H, json={"title": "aelabel demo", "label_config": config}).json()
pid = p["id"]; print("project", pid)

# 300 test images as PNG uploads, with their true labels kept aside.
raw = gzip.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").read()[16+784*20000:]
labels = gzip.open("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").read()[8+20000:]
N = 600
files = []
for i in range(N):
    buf = io.BytesIO(); Image.frombytes("L", (28, 28), raw[i*784:(i+1)*784]).save(buf, "PNG")
    files.append((f"file{i}", (f"img_{i}.png", buf.getvalue(), "image/png")))
for k in range(0, N, 50):
    r = requests.post(f"{LS}/api/projects/{pid}/import", headers=H, files=files[k:k+50]); r.raise_for_status()
tasks = requests.get(f"{LS}/api/tasks?project={pid}&page_size=1000", headers=H).json()["tasks"]
print("tasks", len(tasks), "first data", tasks[0]["data"])
truth = {t["id"]: labels[int(t["data"]["image"].rsplit("img_", 1)[1].split(".")[0].split("_")[0])] for t in tasks}

ml = requests.post(f"{LS}/api/ml", headers=H, json={"project": pid, "url": AEL, "title": "aelabel"})
print("connect ML backend:", ml.status_code, ml.text[:200]); ml = ml.json()
r = requests.post(f"{LS}/api/dm/actions?id=retrieve_tasks_predictions&project={pid}", headers=H, json={"selectedItems": {"all": True, "excluded": []}})
print("retrieve predictions:", r.status_code, r.text[:200])

def predictions():
    ts = requests.get(f"{LS}/api/tasks?project={pid}&page_size=1000&fields=all", headers=H).json()["tasks"]
    out = {}
    for t in ts:
        ps = requests.get(f"{LS}/api/predictions/?task={t['id']}", headers=H).json()
        if isinstance(ps, list) and ps: out[t["id"]] = ps[-1]
    return out
preds = predictions()
first = next(iter(preds.values()))
print("predictions", len(preds), "example", json.dumps({k: first[k] for k in ("model_version", "score", "result")})[:300])
right = sum(classes.index(p["result"][0]["value"]["choices"][0]) == truth[t] for t, p in preds.items())
print(f"accuracy of predictions: {right}/{len(preds)}")

# People annotate the 100 least confident tasks with their true classes.
least = sorted(preds, key=lambda t: preds[t]["score"])[:300]
for t in least:
    r = requests.post(f"{LS}/api/tasks/{t}/annotations/", headers=H, json={"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [classes[truth[t]]]}}]})
    r.raise_for_status()
print("annotated", len(least))
health = requests.get(f"{AEL}/health").json(); print("health before training:", health.get("trainings"))
r = requests.post(f"{LS}/api/ml/{ml['id']}/train", headers=H, json={}); print("train:", r.status_code, r.text[:200])
deadline = time.time() + 900
while time.time() < deadline:
    tr = requests.get(f"{AEL}/health").json().get("trainings", {})
    state = tr.get(str(pid), {}).get("state")
    if state in ("finished", "failed"): break
    time.sleep(2)
print("training:", json.dumps(tr.get(str(pid))))
# The server follows the registry (every --registry-poll-ms): wait until it serves the new one.
new = (tr.get(str(pid)) or {}).get("model_version") if (tr.get(str(pid)) or {}).get("activated") else None
while new and time.time() < deadline and requests.get(f"{AEL}/health").json()["model_version"] != new:
    time.sleep(0.5)
r = requests.post(f"{LS}/api/dm/actions?id=retrieve_tasks_predictions&project={pid}", headers=H, json={"selectedItems": {"all": True, "excluded": []}})
preds2 = predictions()
versions = sorted({p["model_version"] for p in preds2.values()})
right = sum(classes.index(p["result"][0]["value"]["choices"][0]) == truth[t] for t, p in preds2.items())
print(f"accuracy of the latest predictions: {right}/{len(preds2)}")
print("prediction model versions now:", versions)
