{#-
    The deduplication ledger: one narrow row per parsed salesforce record, with, for a record that passed its
    own checks, its contact version (Id@LastModifiedDate) and, when an earlier record with the same contact version (Id@LastModifiedDate) was accepted (in
    this run or an earlier one), that record's batch and position. Narrow, so deduplicating 10M
    records needs little memory. Incremental over new parsed rows.
-#}
{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='fail',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{{ cdp.deduplicated_records('int_salesforce__parsed', key='contact_version_key') }}
