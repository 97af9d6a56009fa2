{#-
    The incremental strategies the project uses on DuckDB, also on BigQuery.

    dbt-bigquery knows `merge`, `insert_overwrite` and `microbatch` only. The models are written with
    `append` (immutable, append-only layers: bronze, silver history, segment_changes) and `delete+insert`
    (replace every row of the keys a run touched, where a key may have many rows: identity components,
    consent per profile and channel...). A MERGE cannot express the second (it fails on duplicate keys)
    and would cost a join for the first. These two macros, which dbt-bigquery's incremental
    materialization calls by name, accept both strategies and build them as BigQuery scripts:
    - append: INSERT of the new rows;
    - delete+insert: DELETE of the keys in the new rows, then INSERT, in one transaction.
    Every other strategy goes to dbt-bigquery unchanged.
-#}

{% macro dbt_bigquery_validate_get_incremental_strategy(config) %}
    {%- set strategy = config.get("incremental_strategy") or 'merge' -%}
    {%- if strategy in ['append', 'delete+insert'] -%}
        {%- do return(strategy) -%}
    {%- endif -%}
    {%- do return(dbt_bigquery.dbt_bigquery_validate_get_incremental_strategy(config)) -%}
{% endmacro %}

{% macro bq_generate_incremental_build_sql(
    strategy, tmp_relation, target_relation, sql, unique_key, partition_by, partitions, dest_columns,
    tmp_relation_exists, copy_partitions, incremental_predicates
) %}
    {%- if strategy not in ['append', 'delete+insert'] -%}
        {{ return(dbt_bigquery.bq_generate_incremental_build_sql(
            strategy, tmp_relation, target_relation, sql, unique_key, partition_by, partitions, dest_columns,
            tmp_relation_exists, copy_partitions, incremental_predicates)) }}
    {%- endif -%}
    {%- set columns = get_quoted_csv(dest_columns | map(attribute='name')) -%}
    {%- set source -%}
        {%- if tmp_relation_exists -%}{{ tmp_relation }}{%- else -%}({{ sql }}){%- endif -%}
    {%- endset -%}
    {%- set build_sql -%}
        {%- if strategy == 'append' -%}
        insert into {{ target_relation }} ({{ columns }})
        select {{ columns }} from {{ source }}
        {%- else -%}
        {%- set keys = unique_key if unique_key is sequence and unique_key is not string else [unique_key] -%}
        {%- if not tmp_relation_exists %}
        create temp table {{ tmp_relation.identifier }} as {{ sql }};
        {%- set source = tmp_relation.identifier -%}
        {%- endif %}
        begin transaction;
        delete from {{ target_relation }} as target
        where exists (
            select 1 from {{ source }} as source
            where {% for key in keys %}source.{{ key }} = target.{{ key }}{% if not loop.last %} and {% endif %}{% endfor %}
        );
        insert into {{ target_relation }} ({{ columns }})
        select {{ columns }} from {{ source }};
        commit transaction;
        {%- endif -%}
    {%- endset -%}
    {{ return(build_sql) }}
{% endmacro %}
