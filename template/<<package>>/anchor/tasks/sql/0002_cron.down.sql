DROP TABLE anchor_cron_schedules;
