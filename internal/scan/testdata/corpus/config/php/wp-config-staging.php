<?php
// Staging site: keys pasted from the WordPress secret-key service, whose
// alphabet has $ and braces.
define( 'DB_NAME', 'wp_staging' );
define( 'DB_USER', 'wp_staging' );
define( 'DB_PASSWORD', getenv( 'WP_DB_PASSWORD' ) );

define('AUTH_KEY',         '@@R::A62:14@@${@@R::B64:16@@!%@@R::A62:30@@');
define('SECURE_AUTH_KEY',  '@@R::A62:21@@{{@@R::B64:19@@|;@@R::A62:20@@');
define('LOGGED_IN_KEY',    '@@R::A62:20@@#:@@R::B64:22@@)~@@R::A62:18@@');
define('NONCE_KEY',        '{{ wp_nonce_key }}');
define('AUTH_SALT',        '${WP_AUTH_SALT}');

$table_prefix = 'wps_';
