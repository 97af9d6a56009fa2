{#-
    Every web record landed with its verdict: `quarantine_reason` is null for an accepted record, else
    the record's own failed check (int_web__parsed) or the duplicate it is (int_web__deduplicated).
    The accepted rows are the staging model, the others the quarantine: landed = silver + quarantined.
-#}
{{ config(materialized='view') }}

{{ cdp.checked_records('int_web__parsed', 'int_web__deduplicated', key_label='event_id') }}
