"""MLflow tracking, the only package that imports mlflow: the store and its retries (`store`), the
server check and patience (`remote`), background sending of curves (`outbox`), what a stage logs
(`tracker`), one run per stage execution (`runs`), loading logged models (`uris`), registry
housekeeping (`registry`), and a team's server to try (`server`)."""
