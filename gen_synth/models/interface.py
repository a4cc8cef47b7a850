"""The generator interface every gen_synth model follows (a mixin for linen Modules).

  G.apply(variables, z, rows=None, cols=None, height=None, width=None,
          truncation_psi=1.0, truncation_cutoff=None)   -> [B, H, W, 3] float32
  G.apply(variables, z, method='mapping')               -> ws [B, num_ws, w_dim]
  G.apply(variables, ws, rows, cols, method='synthesis') -> [B, H, W, 3]

A model defines `mapping_net` (a MappingNetwork), `synthesis`, the fields
`coord_convention` and `resolution`, and the class attributes
`pixel_independent` and `coord_range`.
"""

from gen_synth.models import coords as coords_lib


class GeneratorInterface:
  """Shared `__call__`, `mapping` and default coordinates."""

  def __call__(self, z, rows=None, cols=None, height=None, width=None,
               truncation_psi=1.0, truncation_cutoff=None, update_w_avg=False):
    """z [B, z_dim] -> images [B, H, W, 3] float32 (about [-1, 1], no tanh)."""
    ws = self.mapping(z, truncation_psi, truncation_cutoff, update_w_avg)
    return self.synthesis(ws, rows, cols, height, width)

  def mapping(self, z, truncation_psi=1.0, truncation_cutoff=None, update_w_avg=False):
    """z [B, z_dim] -> ws [B, num_ws, w_dim]; w_avg is tracked with `update_w_avg`."""
    return self.mapping_net(z, truncation_psi, truncation_cutoff, update_w_avg)

  def default_coords(self, n):
    """Coordinates [n] of an n-pixel axis in the model's convention and range."""
    return coords_lib.axis_coords(n, self.coord_convention, *self.coord_range)
