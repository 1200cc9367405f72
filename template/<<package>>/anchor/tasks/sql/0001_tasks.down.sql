DROP TABLE anchor_task_attempts;
DROP TABLE anchor_tasks;
