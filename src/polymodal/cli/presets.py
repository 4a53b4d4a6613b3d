"""Default settings of the main job (``polymodal demo``) and of ``polymodal train``.

Chosen on the OpenMoji validation split (never the test split), under the demo's budget of about
5 minutes on 2 CPU cores for the first run.
"""

from polymodal.models.aligner import AlignerConfig
from polymodal.train.fit import TrainConfig

DEMO_MODEL = AlignerConfig(unlock_image=2, unlock_text=1, image_size=160, image_head_hidden=0, head_dropout=0.1)
DEMO_TRAIN = TrainConfig(epochs=30, batch_size=256, lr=1e-3, tower_lr=2e-4, image_views=3, patience=6)
