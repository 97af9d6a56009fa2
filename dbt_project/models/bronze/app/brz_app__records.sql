{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='fail') }}

{{ cdp.bronze_records('app') }}
