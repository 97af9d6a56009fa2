{#-
    The deduplication ledger: one narrow row per parsed email record, with, for a record that passed its
    own checks, its sg_event_id and, when an earlier record with the same sg_event_id was accepted (in
    this run or an earlier one), that record's batch and position. Narrow, so deduplicating 10M
    records needs little memory. Incremental over new parsed rows.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='fail',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{{ cdp.deduplicated_records('int_email__parsed', key='event_id') }}
