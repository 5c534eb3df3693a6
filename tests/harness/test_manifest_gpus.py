"""The GPUs a run records are the ones it could use: nvidia-smi lists the whole host, CUDA_VISIBLE_DEVICES narrows
it (on the lent 2-GPU H200 machine every single-GPU run first recorded both GPUs, which halved its tokens/s per
accelerator in run_summary)."""

from mlperf_assets.harness.manifest import parse_nvidia_smi_csv, visible_gpus

SMI = ("index, name, uuid, memory.total [MiB], driver_version\n"
       "0, NVIDIA H200, GPU-7f78ba66-a9af, 143771 MiB, 580.159.04\n"
       "1, NVIDIA H200, GPU-e6595da0-e9ea, 143771 MiB, 580.159.04\n")


def test_cuda_visible_devices_narrows_the_recorded_gpus():
    gpus = parse_nvidia_smi_csv(SMI)
    assert [g["index"] for g in visible_gpus(gpus, None)] == ["0", "1"]
    assert [g["index"] for g in visible_gpus(gpus, "1")] == ["1"]
    assert [g["uuid"] for g in visible_gpus(gpus, "GPU-e6595da0")] == ["GPU-e6595da0-e9ea"]
    assert sorted(g["index"] for g in visible_gpus(gpus, "1,0")) == ["0", "1"]
    assert visible_gpus(gpus, "") == []  # CUDA sees no GPU
    assert [g["index"] for g in visible_gpus(gpus, "0,7")] == ["0"]  # CUDA stops at the first invalid entry
