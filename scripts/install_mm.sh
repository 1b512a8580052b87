#!/usr/bin/env bash
# `make install-mm`: OpenMMLab (mmengine, mmcv with compiled ops, mmdet 3.3) into the project venv.
#
# mmdet 3.3 needs mmcv>=2.0.0rc4,<2.2.0 with its compiled ops (mmcv-lite fails at `import mmdet.models`:
# No module named 'mmcv._ext'), and PyPI serves mmcv 2.1.0 only as source, whose build fails twice on
# today's toolchain: its setup.py imports pkg_resources (gone from recent setuptools, so it is built
# without build isolation, in a build venv with an older setuptools that sees the project's torch), and
# it hard-codes -std=c++17 while torch 2.14's headers require C++20 (patched to -std=c++20).
# The wheel is built once per (python, torch build) into a cache outside the repository
# (PTSBENCH_WHEEL_CACHE, default ~/.cache/ptsbench/wheels) and reused by every clone on the machine;
# a repeat run only reinstalls from the cache. MAX_JOBS (default 2) bounds the compile jobs.
set -euo pipefail

PY=${PY:-.venv/bin/python}
CACHE=${PTSBENCH_WHEEL_CACHE:-$HOME/.cache/ptsbench/wheels}
MMCV_VERSION=2.1.0
export MAX_JOBS=${MAX_JOBS:-2}
# no debug info: python's CFLAGS carry -g, which roughly doubles the compile time of torch-header-heavy ops
export CFLAGS="${CFLAGS:--g0 -O2}"

# the compiled ops link against libtorch: one wheel per python and torch build (CUDA ops when CUDA is there)
TAG=$("$PY" -c 'import sys, torch
ops = "cuda" if torch.cuda.is_available() else "cpu"
print(f"cp{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-{ops}".replace("+", "_"))')
WHEELS="$CACHE/mmcv-$MMCV_VERSION-$TAG"
mkdir -p "$CACHE"

WORK=""
trap 'rm -rf "${WORK:-/nonexistent}"' EXIT  # an interrupted build leaves no half-built tree behind

build_mmcv() {
    local work site
    work=$(mktemp -d "$CACHE/.build-XXXXXX")
    WORK=$work
    echo "install-mm: building mmcv $MMCV_VERSION ($TAG, MAX_JOBS=$MAX_JOBS); about 8 minutes on 2 cores, once per machine"
    # build venv: an older setuptools (with pkg_resources) in front of the project's packages (torch)
    "$PY" -m venv "$work/venv"
    local bpy="$work/venv/bin/python"
    site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$site" > "$("$bpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ptsbench-project.pth"
    "$bpy" -m pip install -q "setuptools>=68,<81" wheel
    "$bpy" -c "import pkg_resources, torch"
    # the sdist (pip reads its metadata by running setup.py, hence the build venv already here)
    "$bpy" -m pip download -q --no-deps --no-build-isolation --no-binary mmcv "mmcv==$MMCV_VERSION" -d "$work/sdist"
    tar -xzf "$work"/sdist/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
    local src="$work/mmcv-$MMCV_VERSION"
    sed -i "s/-std=c++17/-std=c++20/g" "$src/setup.py"
    grep -q -- "-std=c++20" "$src/setup.py" || { echo "install-mm: the -std patch did not apply" >&2; return 1; }
    local start=$SECONDS
    local log="$CACHE/mmcv-$MMCV_VERSION-$TAG.build.log"
    (cd "$src" && nice -n 10 "$bpy" -m pip wheel -v --no-deps --no-build-isolation . -w "$work/wheel") >"$log" 2>&1 \
        || { tail -n 40 "$log" >&2; echo "install-mm: the mmcv build failed; full log: $log" >&2; return 1; }
    echo "install-mm: mmcv built in $((SECONDS - start)) s"
    rm -rf "$WHEELS" && mv "$work/wheel" "$WHEELS"
}

# one build at a time per cache (two clones installing at once wait for the first)
exec 9>"$CACHE/.lock"
flock 9
if ! ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    build_mmcv
else
    echo "install-mm: mmcv $MMCV_VERSION wheel from the cache ($WHEELS)"
fi
flock -u 9

"$PY" -m pip install -q --find-links "$WHEELS" "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl
"$PY" -m pip install -q --find-links "$WHEELS" -e '.[all,mm]'
"$PY" -c "import mmcv, mmcv.ops, mmdet.models, mmengine; print('install-mm: mmcv', mmcv.__version__, '/ mmdet', \
__import__('mmdet').__version__, '/ mmengine', mmengine.__version__)"
