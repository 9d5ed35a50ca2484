"""`distill fuse`: fold a trained adapter into its base model, as `mlx_lm fuse` does."""

from __future__ import annotations

from pathlib import Path

from distill.trainer.errors import TrainerError
from distill.trainer.render import check_model_source
from distill.trainer.train_config import ADAPTER_FILE
from pydantic import BaseModel, ConfigDict


class FuseResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    save_path: str
    fused_modules: int


def fuse(
    model: str | Path,
    adapter_path: Path,
    save_path: Path,
    *,
    dequantize: bool = False,
) -> FuseResult:
    """Merge a trained adapter into the base model and save a standalone model directory.

    The same steps as `mlx_lm fuse` (load with the adapter, fuse each adapted layer, save).
    """
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    model_source = check_model_source(model)
    adapter_path = Path(adapter_path)
    if not (adapter_path / ADAPTER_FILE).is_file() or not (adapter_path / "adapter_config.json").is_file():
        raise TrainerError(f"{adapter_path}: no {ADAPTER_FILE} + adapter_config.json here (run distill train first)")
    try:
        loaded, tokenizer, config = load(model_source, adapter_path=str(adapter_path), return_config=True)
    except Exception as error:  # noqa: BLE001 - a mismatched adapter or model is the user's input
        raise TrainerError(f"{adapter_path}: cannot apply this adapter to {model_source} ({error})") from None
    fused = [
        (name, module.fuse(dequantize=dequantize)) for name, module in loaded.named_modules() if hasattr(module, "fuse")
    ]
    if fused:
        loaded.update_modules(tree_unflatten(fused))
    if dequantize:
        loaded = dequantize_model(loaded)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    save_path = Path(save_path)
    save(save_path, model_source, loaded, tokenizer, config, donate_model=False)
    return FuseResult(save_path=str(save_path), fused_modules=len(fused))
