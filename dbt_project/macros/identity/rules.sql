{#-
    The identity rules, read from dbt vars (dbt_project.yml) so that a project can change them
    without touching SQL:
      cdp__identity_type_priority     identifier types, strongest first. A record belongs to the
                                      profile of its strongest identifier (its anchor).
      cdp__identity_max_per_profile   the most distinct identifiers of a type one person may have.
                                      An identifier linked to more than that many identifiers of a
                                      type is shared (a family tablet, an office phone): its links are cut.
      cdp__identity_link_confidence   how much a link through a type is trusted; a profile's identity
                                      confidence is the weakest link it is built from.
-#}

{% macro identity_type_priority() -%}
    {{ return(var('cdp__identity_type_priority',
        ['crm_id', 'user_id', 'email', 'phone', 'device_id', 'anonymous_id'])) }}
{%- endmacro %}

{% macro identity_max_per_profile() -%}
    {{ return(var('cdp__identity_max_per_profile',
        {'crm_id': 3, 'user_id': 1, 'email': 3, 'phone': 2, 'device_id': 5, 'anonymous_id': 25})) }}
{%- endmacro %}

{% macro identity_link_confidence() -%}
    {{ return(var('cdp__identity_link_confidence',
        {'crm_id': 1.0, 'user_id': 1.0, 'email': 0.99, 'phone': 0.95, 'device_id': 0.9, 'anonymous_id': 0.9})) }}
{%- endmacro %}

{#- A SQL case expression mapping an identifier type column to a per-type value of `mapping`. -#}
{% macro identity_case(type_expr, mapping, else_value='null') -%}
    case {{ type_expr }}
        {%- for key, value in mapping.items() %}
        when '{{ key }}' then {{ value }}
        {%- endfor %}
        else {{ else_value }}
    end
{%- endmacro %}

{% macro identity_type_rank(type_expr) -%}
    {%- set ranks = {} -%}
    {%- for t in cdp.identity_type_priority() -%}{%- do ranks.update({t: loop.index}) -%}{%- endfor -%}
    {{ cdp.identity_case(type_expr, ranks, '99') }}
{%- endmacro %}

{#- The profile id an identifier founds when it is the oldest of its profile: stable, and the same on every warehouse. -#}
{% macro identity_birth_profile_id(identifier_key_expr) -%}
    'prf_' || substr({{ cdp.md5_hex(identifier_key_expr) }}, 1, 24)
{%- endmacro %}
