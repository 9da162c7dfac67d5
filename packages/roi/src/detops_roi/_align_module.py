"""What the RoIAlign and RoIAlignRotated modules share: their settings and how they print.
Each subclass sets its own defaults and says in forward which op it calls."""

from torch import nn
from torch.jit.annotations import BroadcastingList2


class AlignSettings(nn.Module):
    def __init__(self, output_size: BroadcastingList2[int], spatial_scale: float, sampling_ratio: int, aligned: bool):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )
