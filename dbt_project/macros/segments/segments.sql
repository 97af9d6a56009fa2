{#-
    Segments are the models in models/segments/: one SQL file each, returning profile_id (and
    `score` when its kind is scored), with its meta in config(meta={'segment': {...}}).

    gold.segment_results takes the union of all of them without a hand-kept list. dbt records a
    model's dependencies when it parses it, and a ref() that only runs at execution time (in a loop
    over `graph`) fails with "dbt was unable to infer all dependencies". So segment_results does not
    ref the segment models: at execution it finds them in `graph` and renders each one's SQL in its
    own context (`render(node.raw_code)`), inlining the segment as a subquery. Every ref inside a
    segment then resolves against segment_results' own dependencies, the gold models segments are
    written on (the `-- depends_on:` lines of segment_results.sql); a segment reading anything else
    fails with a message saying which line to add there. The segment models themselves are views
    (free to build): they hold the same SQL for ad-hoc queries, unit tests and the docs.
-#}

{#- The enabled segment models, sorted by name, their meta checked. Empty while parsing. -#}
{% macro segment_nodes() -%}
    {%- set found = [] -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.package_name == project_name
                and node.fqn | length > 2 and node.fqn[1] == 'segments' -%}
                {%- do cdp.check_segment_meta(node) -%}
                {%- do found.append(node) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(found | sort(attribute='name')) }}
{%- endmacro %}


{#- A segment's meta, with its id (the model name) as `segment`. -#}
{% macro segment_meta(node) -%}
    {%- set meta = (node.config.meta or {}).get('segment') or (node.meta or {}).get('segment') or {} -%}
    {{ return({
        'segment': node.name,
        'name': meta.get('name', node.name),
        'description': meta.get('description'),
        'kind': meta.get('kind'),
        'owner': meta.get('owner'),
        'destinations': meta.get('destinations') or [],
    }) }}
{%- endmacro %}


{% macro check_segment_meta(node) -%}
    {%- set meta = cdp.segment_meta(node) -%}
    {%- set problems = [] -%}
    {%- if meta.kind not in ['realtime', 'batch', 'scored'] -%}
        {%- do problems.append("kind must be realtime, batch or scored (got " ~ meta.kind ~ ")") -%}
    {%- endif -%}
    {%- for key in ['description', 'owner'] -%}
        {%- if not meta[key] -%}{%- do problems.append(key ~ " is missing") -%}{%- endif -%}
    {%- endfor -%}
    {%- if meta.destinations is string or meta.destinations | length == 0 -%}
        {%- do problems.append("destinations must be a list with at least one destination") -%}
    {%- endif -%}
    {%- if problems -%}
        {{ exceptions.raise_compiler_error(
            "segment " ~ node.name ~ " (" ~ node.original_file_path ~ "): config(meta={'segment': {...}}) is "
            ~ "incomplete: " ~ problems | join('; ')) }}
    {%- endif -%}
{%- endmacro %}


{#- Every segment's members as (segment, profile_id, score): the SQL of segment_results. -#}
{% macro union_segments() -%}
    {%- set nodes = cdp.segment_nodes() -%}
    {%- set score_type = cdp.type_double() -%}
    {%- if not nodes -%}
        {#- parsing, or no segment at all: the right columns and no rows -#}
        select
            cast(null as {{ dbt.type_string() }}) as segment,
            cast(null as {{ dbt.type_string() }}) as profile_id,
            cast(null as {{ score_type }}) as score
        from (select 1 as one) as nothing
        where 1 = 0
    {%- else -%}
        {%- set available = model.depends_on.nodes -%}
        {%- for node in nodes -%}
            {%- for upstream in node.depends_on.nodes if upstream not in available -%}
                {{ exceptions.raise_compiler_error(
                    "segment " ~ node.name ~ " reads " ~ upstream ~ ", which " ~ model.name ~ " does not depend on: add "
                    ~ "`-- depends_on: {{ ref('" ~ upstream.split('.')[-1] ~ "') }}` to " ~ model.original_file_path) }}
            {%- endfor %}
        {%- if not loop.first %}
        union all
        {% endif %}
        -- segment {{ node.name }} ({{ node.original_file_path }})
        select
            '{{ node.name }}' as segment,
            profile_id,
            {% if cdp.segment_meta(node).kind == 'scored' -%}
            cast(max(score) as {{ score_type }})
            {%- else -%}
            cast(null as {{ score_type }})
            {%- endif %} as score
        from (
            {{ render(node.raw_code) | indent(12) }}
        ) as {{ node.name }}
        where profile_id is not null
        group by profile_id
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
