{#-
    Every salesforce record landed with its verdict: `quarantine_reason` is null for an accepted record, else
    the record's own failed check (int_salesforce__parsed) or the duplicate it is (int_salesforce__deduplicated).
    The accepted rows are the staging model, the others the quarantine: landed = silver + quarantined.
-#}
{{ config(materialized='view') }}

{{ cdp.checked_records('int_salesforce__parsed', 'int_salesforce__deduplicated', key_label='contact version (Id@LastModifiedDate)') }}
