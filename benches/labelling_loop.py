#!/usr/bin/env python3
"""The labelling loop, measured through the CLI a team would use.

From an empty registry, for each strategy: `aelabel jobs create --classes …` (no model),
`jobs add` of every Fashion-MNIST image (train + t10k: 70,000), then round after round
`jobs next --pick S` → the true labels answer as people would → `jobs review --csv` →
`jobs train`, until the pool is labelled at the target accuracy (or a label cap). After each
round it reads `jobs export` and scores against the true labels:

- human labels so far (every label people gave: first batch, reviews, threshold evidence),
- pool accuracy (people's labels + the job's model's class for every other item),
- the auto-accepted share and its true accuracy, and the round's training seconds.

The random strategy stops at twice the labels the loop needed (its pool accuracy there is
reported). Writes OUT/loop.json, OUT/loop.md and OUT/loop.png (human labels → pool accuracy,
one line per strategy, the target drawn).

Usage: benches/labelling_loop.py --server 127.0.0.1:50051 [--aelabel target/release/aelabel]
       [--strategies loop,uncertain,random] [--rounds 1000] [--target 0.95] [--out DIR]
       [--parts train,t10k]  (`--parts t10k`: a quick run on 10,000 images)
The server must run with a registry (`aelabel serve`, no --model); start it on an empty
AELABEL_HOME to measure the cold start. `benches/labelling_loop.sh` does all of that.
"""

import argparse
import csv
import gzip
import json
import os
import struct
import subprocess
import sys
import time

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


def read_labels(path):
    with gzip.open(path, "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        if magic != 2049:
            sys.exit(f"{path}: not an IDX label file")
        return list(f.read(n))


def truth_of(data_dir, parts):
    """Ids as `jobs add` names them (FILE#index) → true class name."""
    truth = {}
    for part in parts:
        images = os.path.join(data_dir, f"{part}-images-idx3-ubyte.gz")
        labels = read_labels(os.path.join(data_dir, f"{part}-labels-idx1-ubyte.gz"))
        for i, label in enumerate(labels):
            truth[f"{images}#{i}"] = FASHION[label]
    return truth


class Cli:
    def __init__(self, binary, server):
        self.binary, self.server = binary, server

    def run(self, *args, capture=True):
        cmd = [self.binary, "--quiet", "jobs", "--server", self.server, *args]
        r = subprocess.run(cmd, capture_output=capture, text=True)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout


def score(export_path, truth, labelled_ids):
    right = accepted = accepted_right = 0
    with open(export_path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        ok = row["class"] == truth[row["id"]]
        right += ok
        if row["source"] == "auto":
            accepted += 1
            accepted_right += ok
    n = len(rows)
    return {
        "pool_accuracy": right / n,
        "auto_accepted_share": accepted / n,
        "auto_accepted_accuracy": accepted_right / accepted if accepted else None,
        "items": n,
    }


def run_strategy(cli, strategy, truth, inputs, args, work, cap):
    job = cli.run("create", "--name", f"loop-{strategy}", "--classes", ",".join(FASHION),
                  "--target-accuracy", str(args.target)).strip().splitlines()[-1]
    t = time.time()
    cli.run("add", job, *inputs)
    add_seconds = time.time() - t
    rounds, labelled = [], set()
    sizes = [int(s) for s in (args.random_rounds if strategy == "random" else args.rounds).split(",")]
    while True:
        n = sizes[min(len(rounds), len(sizes) - 1)]
        n = min(n, cap - len(labelled)) if cap else n
        if n <= 0:
            break
        picks = os.path.join(work, f"{strategy}-next-{len(rounds) + 1}.csv")
        t = time.time()
        cli.run("next", job, "--n", str(n), "--pick", strategy, "--out", picks)
        next_seconds = time.time() - t
        answers = os.path.join(work, f"{strategy}-answers-{len(rounds) + 1}.csv")
        with open(picks) as f, open(answers, "w", newline="") as out:
            w = csv.writer(out)
            w.writerow(["id", "class"])
            for row in csv.DictReader(f):
                w.writerow([row["id"], truth[row["id"]]])
                labelled.add(row["id"])
        cli.run("review", job, "--csv", answers)
        # The loop's models become the served one, and from its second round on a client
        # calls Label on the same server while the round trains (its p99 is recorded).
        serve = strategy == "loop"
        load = None
        if serve and rounds:
            load = subprocess.Popen(
                [cli.binary, "--quiet", "bench", "--server", cli.server, "--rpc", "label",
                 "--batch", "1", "--concurrency", "1", "--duration", str(args.load_seconds),
                 "--json"], stdout=subprocess.PIPE, text=True)
        t = time.time()
        result = json.loads(cli.run("train", job, "--json", *(["--activate"] if serve else [])))
        train_seconds = time.time() - t
        label_load = None
        if load:
            load_out, _ = load.communicate()
            label_load = json.loads(load_out)
        export = os.path.join(work, f"{strategy}-export.csv")
        cli.run("export", job, "--out", export)
        s = score(export, truth, labelled)
        status = json.loads(cli.run("status", job, "--json"))
        row = {
            "round": len(rounds) + 1,
            "human_labels": status["human_labels"],
            "evidence_labels": status["evidence_labels"],
            **s,
            "estimated_accepted_accuracy": status["estimated_accepted_accuracy"],
            "threshold": status["model_threshold"],
            "train_seconds": train_seconds,
            "server_round_seconds": (result.get("result") or {}).get("seconds"),
            "next_seconds": next_seconds,
            "label_during_training": label_load,
        }
        rounds.append(row)
        acc = row["auto_accepted_accuracy"]
        print(f"{strategy:>9} round {row['round']:>2}: {row['human_labels']:>6} human labels "
              f"→ pool {100 * s['pool_accuracy']:.2f} %, auto-accepted "
              f"{100 * s['auto_accepted_share']:.1f} % at "
              f"{'–' if acc is None else f'{100 * acc:.2f} %'}, train {train_seconds:.1f} s",
              flush=True)
        if s["pool_accuracy"] >= args.target:
            break
    return {"job": job, "add_seconds": add_seconds, "rounds": rounds}


def reached(rounds, target):
    for r in rounds:
        if r["pool_accuracy"] >= target:
            return r["human_labels"]
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="127.0.0.1:50051")
    p.add_argument("--aelabel", default="target/release/aelabel")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--strategies", default="loop,uncertain,random")
    p.add_argument("--rounds", default="1000")
    p.add_argument("--random-rounds", default="2000",
                   help="round sizes of the random strategy (it needs about twice as many labels)")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--out", default="target/labelling-loop")
    p.add_argument("--parts", default="train,t10k")
    p.add_argument("--load-seconds", type=float, default=15.0,
                   help="how long Label is called while each loop round trains")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cli = Cli(args.aelabel, args.server)
    parts = args.parts.split(",")
    truth = truth_of(args.data, parts)
    inputs = [os.path.join(args.data, f"{part}-images-idx3-ubyte.gz") for part in parts]
    results, loop_labels = {}, None
    for strategy in args.strategies.split(","):
        cap = 2 * loop_labels if strategy == "random" and loop_labels else 0
        results[strategy] = run_strategy(cli, strategy, truth, inputs, args, args.out, cap)
        if strategy == "loop":
            loop_labels = reached(results[strategy]["rounds"], args.target)
    summary = {
        s: {"labels_to_target": reached(r["rounds"], args.target),
            "last": r["rounds"][-1] if r["rounds"] else None}
        for s, r in results.items()
    }
    report = {"target": args.target, "items": len(truth), "cpu": cpu_name(),
              "summary": summary, "strategies": results}
    with open(os.path.join(args.out, "loop.json"), "w") as f:
        json.dump(report, f, indent=1)
    plot = {"title": f"Human labels until the pool is labelled ({len(truth):,} images)",
            "x_label": "human labels", "y_label": "pool accuracy (%)",
            "target": [100 * args.target, f"{100 * args.target:.0f} % target"],
            "curves": [{"name": s, "points": [[r["human_labels"], 100 * r["pool_accuracy"]]
                                              for r in res["rounds"]]}
                       for s, res in results.items()]}
    plot_path = os.path.join(args.out, "loop-plot.json")
    with open(plot_path, "w") as f:
        json.dump(plot, f)
    subprocess.run([args.aelabel, "--quiet", "bench", "plot", "--json", plot_path,
                    "--out", os.path.join(args.out, "loop.png")], check=True)
    with open(os.path.join(args.out, "loop.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def p99(load):
    if not load:
        return "–"
    errors = sum(load["errors"].values())
    return f"{load['latency']['p99_ms']:.1f} ms ({load['requests']} calls, {errors} errors)"


def markdown(report):
    pct = lambda x: "–" if x is None else f"{100 * x:.2f} %"
    out = [f"# Labelling loop ({report['items']:,} images, target {pct(report['target'])}, "
           f"{report['cpu']})", ""]
    for s, res in report["strategies"].items():
        out += [f"## {s}", "", "| round | human labels | pool accuracy | auto-accepted | "
                "their accuracy | estimated | train s | Label p99 during it |",
                "|---|---|---|---|---|---|---|---|"]
        for r in res["rounds"]:
            out.append(f"| {r['round']} | {r['human_labels']:,} | {pct(r['pool_accuracy'])} | "
                       f"{100 * r['auto_accepted_share']:.1f} % | "
                       f"{pct(r['auto_accepted_accuracy'])} | "
                       f"{pct(r['estimated_accepted_accuracy'])} | {r['train_seconds']:.1f} | "
                       f"{p99(r.get('label_during_training'))} |")
        out.append("")
    for s, v in report["summary"].items():
        out.append(f"- {s}: {v['labels_to_target'] or 'not reached'} human labels to the target")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
