{#-
    BigQuery's physical layout of the large models, as config values that are none on every other warehouse
    (dbt-duckdb would read partition_by as a DuckLake partitioning).

    - bigquery_day_partitions(column): day partitions on a timestamp column. Every incremental read of bronze and
      silver filters on `bronze_loaded_at > <the reader's watermark>`, so partitioning on bronze_loaded_at
      bounds what a run scans to the partitions since its last run.
    - bigquery_cluster_by(columns): the columns most reads filter or join on (profile_id for the gold tables read per
      profile), so BigQuery prunes blocks inside a partition or table.
-#}
{% macro bigquery_day_partitions(column) -%}
    {%- if target.type == 'bigquery' -%}
        {{ return({'field': column, 'data_type': 'timestamp', 'granularity': 'day'}) }}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}

{% macro bigquery_cluster_by(columns) -%}
    {%- if target.type == 'bigquery' -%}
        {{ return(columns) }}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}
