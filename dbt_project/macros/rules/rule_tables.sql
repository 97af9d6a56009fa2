{#-
    The rows of a rule seed (whatsapp_intent_rules, program_entities, sentiment_lexicon), read when the
    model runs, so that every pattern is inlined as a constant: a regular expression taken from a
    column is compiled again for every row (DuckDB), 150k messages x 70 rules would take minutes;
    constants compile once. The seed is looked up in the graph, not through ref(), so that a unit test
    (where ref() names a mock) reads the real rules too; the model declares the dependency with
    `-- depends_on: ref(...)`.
    Empty at parse time (nothing to inline until the seed is loaded).
-#}
{% macro rule_table_rows(seed_name, order_by) -%}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set nodes = graph.get('nodes', {}) -%}
    {%- set node = nodes.get('seed.' ~ project_name ~ '.' ~ seed_name) -%}
    {%- if node -%}
        {%- set relation = api.Relation.create(database=node.database, schema=node.schema, identifier=node.alias) -%}
    {%- else -%}
        {#- a unit test sees no graph: the seeds' schema (dbt_project.yml, seeds: +schema: reference) -#}
        {%- set relation = api.Relation.create(
            database=target.database, schema=cdp.generate_schema_name('reference', none), identifier=seed_name) -%}
    {%- endif -%}
    {%- set result = run_query('select * from ' ~ relation ~ ' order by ' ~ order_by) -%}
    {{ return(result.rows) }}
{%- endmacro %}
