{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='fail',
          partition_by=cdp.bigquery_day_partitions('bronze_loaded_at')) }}

{{ cdp.bronze_records('app') }}
