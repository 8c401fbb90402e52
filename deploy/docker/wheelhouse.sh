#!/usr/bin/env bash
# Prepare, outside the image build, every wheel the image installs, so that `docker build` needs
# no network (the Dockerfile installs with --no-index from this folder):
#
#   .wheelhouse/deps/  the runtime dependencies of pyproject.toml at their locked versions
#   .wheelhouse/app/   the orderflow wheel itself, built from a clean copy of the sources
#
# The wheels must suit the image's interpreter: CPython 3.11 on glibc/x86-64 (Debian bookworm,
# the base image of either kind; IMAGE_PYTHON is its exact version). PYTHON runs pip (default:
# the project's virtualenv). Downloads go through pip's cache, so a second run is quicker.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${WHEELHOUSE:-.wheelhouse}
IMAGE_PYTHON=${IMAGE_PYTHON:-3.11.2}

rm -rf "$OUT/app" && mkdir -p "$OUT/deps" "$OUT/app"

# The dependencies change only with the lock: skip their resolution when it has not changed.
stamp="$OUT/deps/.inputs"
inputs=$(cat requirements.lock pyproject.toml "$0" | sha256sum | cut -d' ' -f1)-$IMAGE_PYTHON
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs" ]; then
rm -rf "$OUT/deps" && mkdir -p "$OUT/deps"

# The runtime dependencies, as pyproject.toml names them; requirements.lock pins their versions.
mapfile -t deps < <("$PYTHON" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
# glibc 2.36 runs every manylinux wheel up to manylinux_2_36 (pip does not infer the older ones).
platforms=()
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)
"$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$OUT/deps" \
  --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
  "${platforms[@]}" --constraint requirements.lock "${deps[@]}"

# pip evaluates environment markers against the interpreter running it, not the image's: add
# what the image's exact version needs beyond that (Debian bookworm's CPython is 3.11.2, and
# redis requires async-timeout `python_full_version < "3.11.3"`), at its locked version.
"$PYTHON" - "$OUT/deps" "$IMAGE_PYTHON" <<'PY' | while read -r pin; do
import pathlib, re, sys, zipfile
from packaging.requirements import Requirement
folder, version = pathlib.Path(sys.argv[1]), sys.argv[2]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
have = {norm(w.name.split("-")[0]) for w in folder.glob("*.whl")}
locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open("requirements.lock").read(), re.M))
locked = {norm(k): v for k, v in locked.items()}
env = {"python_full_version": version, "python_version": ".".join(version.split(".")[:2])}
for wheel in folder.glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if not line.startswith("Requires-Dist:") or "python_full_version" not in line:
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            name = norm(req.name)
            if name not in have and req.marker and req.marker.evaluate({**env, "extra": ""}):
                print(f"{name}=={locked[name]}")
                have.add(name)
PY
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$OUT/deps" --no-deps \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    "${platforms[@]}" "$pin"
done
echo "$inputs" >"$stamp"
fi

# The package from a clean copy: a setuptools build/ folder left in the tree must never leak a
# stale file into the wheel (it once shipped an empty orderflow/__init__.py).
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r pyproject.toml README.md src "$src/"
find "$src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps \
  --wheel-dir "$OUT/app" "$src"

# A dependency wheel no longer locked would still be installed by name: keep only locked ones.
"$PYTHON" - "$OUT/deps" <<'PY'
import pathlib, re, sys
locked = {}
for line in open("requirements.lock"):
    m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
    if m:
        locked[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
for wheel in pathlib.Path(sys.argv[1]).glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    if locked.get(re.sub(r"[-_.]+", "-", name).lower()) != version:
        wheel.unlink()
PY
echo "wheelhouse: $(ls "$OUT/deps" | wc -l) dependency wheels, $(ls "$OUT/app")"
