"""IoU of the cached foregrounds (GrabCut vs the mcs_taichi teacher) with the pseudo masks, training clips."""
import time
import numpy as np, torch, torch.nn.functional as F
from training.tasks.mcs import McsTask
from training.data import video_foregrounds, TeacherForeground

task = McsTask({}, 0)
t0 = time.time()
teacher = TeacherForeground("mcs_taichi")
print("teacher", teacher.fingerprint)
rows = []
for clip, frames in zip(task.clips("train"), task.frames("train")):
    pick = np.arange(0, len(frames), 5)
    m = torch.from_numpy(clip.masks(pick)).float()[:, None]
    m = (F.interpolate(m, size=frames[0].shape[:2], mode="area")[:, 0] > 0.5).numpy()
    r = [clip.name]
    for method in ("grabcut", teacher):
        fg = video_foregrounds(frames, method)[pick] > 127
        r.append((fg & m).sum() / max(1, (fg | m).sum()))
    rows.append(r); print(r, time.time() - t0, flush=True)
print("mean grabcut %.3f teacher %.3f" % (np.mean([r[1] for r in rows]), np.mean([r[2] for r in rows])))
print("elapsed", time.time() - t0)
