"""Load check of `multipill serve`: N concurrent clients on loopback for a fixed time, each posting real photos.

    python benchmarks/serve_load.py           # the demo's model; 1, 4 and 8 clients, 60 s each, grocery val photos
    python benchmarks/serve_load.py --quick   # a small synthetic model, 2 clients for 5 s: checks the script

The server is the real command (`python -m multipill serve --model M`) in its own process with a cold, private
OCR cache; the clients are threads here. Every request is a photo the server has not seen (each photo gets a
one-pixel change, re-encoded as JPEG, before timing starts), so the OCR cache never answers for it: what a
counter sees when every customer's photo is new. Reported per number of clients: requests/s, p50 / p95 / max
latency, errors (any status but 200, or no answer; must be 0), and the server's resident memory after one
warm-up request, after the load, and at its peak.
"""
from __future__ import annotations

import io
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from common import ROOT, SHARED, markdown_table, parser, write_json
from multipill.images import load_image
from multipill.server import ServerProcess


def payloads(photos: list[Path], n: int) -> list[bytes]:
    """n distinct JPEGs cycling over the photos: each differs from the others by one pixel."""
    images = [load_image(p) for p in photos]
    out = []
    for i in range(n):
        image = images[i % len(images)].copy()
        image.putpixel((0, 0), ((i * 7) % 256, (i // 256) % 256, 255 - i % 256))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def memory(pid: int) -> dict:
    """Resident and peak resident memory of a process, in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[key].split()[0]) / 1024, 1) for k, key in (("rss_mb", "VmRSS"), ("peak_mb", "VmHWM"))}


class MemoryTrace(threading.Thread):
    """The server's resident memory once a second, for the whole run: growth shows when it happens."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.start_time, self.points, self.done = pid, time.perf_counter(), [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                self.points.append((round(time.perf_counter() - self.start_time, 1), memory(self.pid)["rss_mb"]))
            except (OSError, KeyError):  # the process ended
                return


def load(url: str, bodies: list[bytes], clients: int, seconds: float, start_at: int) -> dict:
    """`clients` threads post photos back to back until `seconds` have passed; latencies and failures."""
    latencies: list[float] = []
    errors: list[str] = []
    lock, cursor = threading.Lock(), [start_at]
    stop = time.perf_counter() + seconds

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.perf_counter() < stop:
                with lock:
                    body = bodies[cursor[0] % len(bodies)]
                    cursor[0] += 1
                begin = time.perf_counter()
                try:
                    r = http.post(f"{url}/predict", files={"file": ("photo.jpg", body, "image/jpeg")})
                    ok = r.status_code == 200 and "label" in r.json()
                    error = "" if ok else f"{r.status_code}: {r.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - begin)
                    if error:
                        errors.append(error)
    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    lat = np.array(latencies)
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(lat),
            "requests_per_s": round(len(lat) / wall, 2), "p50_s": round(float(np.median(lat)), 3),
            "p95_s": round(float(np.percentile(lat, 95)), 3), "max_s": round(float(lat.max()), 3),
            "errors": len(errors), "first_errors": errors[:5], "photos_reused": max(0, cursor[0] - len(bodies))}


def quick_model(work: Path) -> tuple[Path, list[Path]]:
    """A small fused model of four synthetic lookalike packs, and its test photos."""
    from multipill import PillClassifier
    from multipill.products import SEED_PRODUCTS
    from multipill.synthetic import generate_packs
    products = tuple(p for p in SEED_PRODUCTS if p.brand in ("Bioflu", "Neozep", "Decolgen", "Biogesic"))
    data = generate_packs(work / "packs", {"train": 8, "validation": 6, "test": 4}, products=products, size=256)
    model = PillClassifier(image_size=96, views=1, epochs=5, progress=False).fit(data).save(work / "model")
    return model, sorted((data / "test").rglob("*.png"))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", default=None, help="a saved model; default: the demo's (trained first if absent)")
    p.add_argument("--photos", default=str(SHARED / "grocery-packages" / "val"),
                   help="a folder of photos to post (default: grocery val, real phone photos)")
    p.add_argument("--clients", default="1,4,8", help="comma-separated numbers of concurrent clients")
    p.add_argument("--seconds", type=float, default=60.0, help="duration of each load")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="multipill-serve-load-"))
    clients = [2] if args.quick else [int(c) for c in args.clients.split(",")]
    seconds = 5.0 if args.quick else args.seconds
    if args.quick:
        model, photos = quick_model(work)
    else:
        from multipill.server import demo_model
        model = Path(args.model) if args.model else demo_model(ROOT / "multipill_runs" / "demo")
        photos = sorted(f for f in Path(args.photos).rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"no photos in {args.photos}")
    bodies = payloads(photos, 40 if args.quick else 1500)
    rows, runs = [], []
    with ServerProcess(model, work / "server.log", env={"MULTIPILL_CACHE": str(work / "cache")}) as server:
        url, pid = server.url, server.proc.pid
        trace = MemoryTrace(pid)
        try:
            httpx.post(f"{url}/predict", files={"file": ("warm.jpg", bodies[-1])}, timeout=300)  # loads OCR models
            trace.start()
            used = 0
            for n in clients:
                before = memory(pid)
                result = load(url, bodies[:-1], n, seconds, used)
                result["ended_at_s"] = round(time.perf_counter() - trace.start_time, 1)
                used += result["requests"]
                result["memory_before"], result["memory_after"] = before, memory(pid)
                runs.append(result)
                rows.append([n, result["requests"], result["requests_per_s"], result["p50_s"], result["p95_s"],
                             result["max_s"], result["errors"], before["rss_mb"], result["memory_after"]["rss_mb"],
                             result["memory_after"]["peak_mb"]])
                if server.proc.poll() is not None:
                    raise RuntimeError("the server stopped under load")
        finally:
            trace.done.set()
    table = markdown_table(["clients", "requests", "req/s", "p50 s", "p95 s", "max s", "errors", "RSS before MB",
                            "RSS after MB", "peak MB"], rows)
    print(table)
    name = "serve_load_quick" if args.quick else "serve_load"
    path = write_json(Path(args.out), name, {"model": str(model), "photos": args.photos if not args.quick else
                                              "synthetic packs", "distinct_photos": len(bodies), "runs": runs,
                                              "memory_trace": trace.points, "table": table})
    if not args.quick:
        plot(runs, trace.points, Path(args.out) / f"{name}.png")
    print(f"wrote {path}")


def plot(runs: list[dict], trace: list[tuple[float, float]], path: Path) -> None:
    """Requests/s and latency against concurrent clients, and the server's memory through the run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = [r["clients"] for r in runs]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.2))
    a.plot(n, [r["requests_per_s"] for r in runs], "o-")
    a.set(xlabel="concurrent clients", ylabel="requests / s", title="throughput", ylim=(0, None))
    b.plot(n, [r["p50_s"] for r in runs], "o-", label="p50")
    b.plot(n, [r["p95_s"] for r in runs], "s--", label="p95")
    b.set(xlabel="concurrent clients", ylabel="seconds", title="latency per request", ylim=(0, None))
    b.legend()
    c.plot([t for t, _ in trace], [m for _, m in trace])
    for r in runs:
        c.axvline(r["ended_at_s"], color="grey", lw=0.8, ls=":")
        c.annotate(f"{r['clients']} clients", (r["ended_at_s"], c.get_ylim()[0]), rotation=90, ha="right",
                   va="bottom", fontsize=7, color="grey")
    c.set(xlabel="seconds", ylabel="server RSS, MB", title="memory (dotted: end of each load)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
