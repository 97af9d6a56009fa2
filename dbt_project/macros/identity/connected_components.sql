{#-
    Connected components of an undirected graph, in plain SQL that runs on DuckDB and BigQuery.

    Why not a recursive CTE: a recursive CTE walks every path, so its intermediate result grows with
    the number of paths (exponential on graphs with cycles, and millions of rows on one hub) and
    BigQuery caps its iterations. Instead this runs bounded rounds of min-label propagation with
    pointer jumping, each round one `create table as`, until no label changes:

        label(n)  <- min(label(n), min label(m) over the neighbours m of n)
        label(n)  <- label(label(n))            (pointer jumping: follow the label's own label)

    Labels only decrease and always name a node of the same component, so at the fixpoint every
    node of a component holds the component's smallest node. Propagation alone needs as many rounds
    as the graph's diameter; identity edges are stars around each record's anchor (diameter ~4 on
    real data) and pointer jumping shortens long chains, so a run takes a handful of rounds. The
    round count is bounded by `cdp__identity_max_rounds`; if the labels have not converged by then
    the build fails loudly rather than publishing half-merged profiles.

    Arguments: `edges_sql` selects `src`, `dst` (integer node numbers, smaller = preferred as the
    component's label; one direction is enough). `base` is the model's relation: work tables are
    named after it (cc_work()) and dropped by drop_components_work().
    Returns the relation `<base>__cc_labels` with (node, label) for every node that has an edge; a
    node without edges is a component of its own and is not listed (most identifiers are such
    singletons: leaving them out of the rounds halves their cost). Only executes while running a model
    (`dbt run` / `dbt build`); when compiling it returns SQL that shows one round.
-#}
{% macro connected_components(edges_sql, base) -%}
    {%- set max_rounds = var('cdp__identity_max_rounds', 40) | int -%}
    {%- set edges = cdp.cc_work(base, 'edges') -%}
    {%- if not (execute and flags.WHICH in ('run', 'build')) -%}
        {{ return('(select src as node, src as label from (' ~ edges_sql ~ ') as e)') }}
    {%- endif -%}

    {%- do run_query('create or replace table ' ~ edges ~ ' as
        select src, dst from (' ~ edges_sql ~ ') as e where src <> dst
        union all
        select dst as src, src as dst from (' ~ edges_sql ~ ') as e where src <> dst') -%}
    {%- do run_query('create or replace table ' ~ cdp.cc_work(base, 0) ~ ' as select distinct src as node, src as label from ' ~ edges) -%}

    {%- set state = namespace(round=0, done=false) -%}
    {%- for i in range(max_rounds) if not state.done -%}
        {%- set previous = cdp.cc_work(base, i) -%}
        {%- set current = cdp.cc_work(base, i + 1) -%}
        {%- do run_query('create or replace table ' ~ current ~ ' as
            with neighbour_min as (
                select e.src as node, min(l.label) as label
                from ' ~ edges ~ ' as e
                inner join ' ~ previous ~ ' as l on l.node = e.dst
                group by e.src
            ),
            propagated as (
                select l.node, least(l.label, coalesce(m.label, l.label)) as label
                from ' ~ previous ~ ' as l
                left join neighbour_min as m on m.node = l.node
            )
            select p.node, least(p.label, coalesce(j.label, p.label)) as label
            from propagated as p
            left join propagated as j on j.node = p.label') -%}
        {%- set changed = run_query('select count(*) from ' ~ current ~ ' as c inner join ' ~ previous
            ~ ' as p on p.node = c.node where c.label <> p.label').columns[0].values()[0] -%}
        {%- do run_query('drop table if exists ' ~ previous) -%}
        {%- set state.round = i + 1 -%}
        {%- if changed == 0 -%}{%- set state.done = true -%}{%- endif -%}
    {%- endfor -%}
    {%- if not state.done -%}
        {{ exceptions.raise_compiler_error('connected components did not converge in ' ~ max_rounds
            ~ ' rounds (var cdp__identity_max_rounds): the identity graph has an unusually long chain') }}
    {%- endif -%}
    {%- do run_query('create or replace table ' ~ cdp.cc_work(base, 'labels') ~ ' as select node, label from '
        ~ cdp.cc_work(base, state.round)) -%}
    {%- do run_query('drop table if exists ' ~ cdp.cc_work(base, state.round)) -%}
    {{ log('identity: connected components converged in ' ~ state.round ~ ' rounds', info=true) }}
    {{ return(cdp.cc_work(base, 'labels')) }}
{%- endmacro %}


{#- A work table of connected_components(), named after the model: <model>__cc_<suffix>. -#}
{% macro cc_work(base, suffix) -%}
    {{ return(base.incorporate(path={'identifier': base.identifier ~ '__cc_' ~ suffix})) }}
{%- endmacro %}


{#- Drops the work tables of connected_components() (used as the model's post-hook). -#}
{% macro drop_components_work(base) -%}
    {%- if execute and flags.WHICH in ('run', 'build') -%}
        {%- for suffix in ['edges', 'nodes', 'seeds', 'labels'] -%}
            {%- do run_query('drop table if exists ' ~ cdp.cc_work(base, suffix)) -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}
