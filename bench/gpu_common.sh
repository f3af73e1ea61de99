# Sourced by bench/gpu_check.sh and bench/gpu_session.sh: what both do before their steps.

# prepare_dirs: from the project root, DATA and DEST made absolute (DEST created); stops unless DATA holds
# the compact CIFAR-10 file.
prepare_dirs() {
    cd "$(dirname "$0")/.." || exit 1
    DATA=$(cd "$DATA" && pwd) || exit 1
    mkdir -p "$DEST"
    DEST=$(cd "$DEST" && pwd)
    if [ ! -f "$DATA/cifar10.npz" ]; then
        echo "no $DATA/cifar10.npz; make it with: python /work/shared/data/cifar10/to_npz.py $DATA/cifar10.npz --long-tailed 300"
        exit 2
    fi
}

# record_env [FILE]: the date, GPU, Python, torch, CPUs and commit, printed (and written to FILE).
record_env() {
    { date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
      nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv 2>/dev/null
      "$PY" -c "import sys, numpy, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
      echo "cpus $(nproc)"; grep -m1 'model name' /proc/cpuinfo; git rev-parse HEAD 2>/dev/null; } 2>&1 | tee "${1:-/dev/null}"
}
