"""Task sources and environments that produce examples for rollouts and score responses."""

from rlvr_lab.envs.single_turn import SingleTurnEnv, task_rubric
from rlvr_lab.envs.tasks import ReasoningGymTask, overlap, split_train_eval

__all__ = ["ReasoningGymTask", "SingleTurnEnv", "overlap", "split_train_eval", "task_rubric"]
