<?php
/** The name of the database for WordPress */
define( 'DB_NAME', 'wordpress' );
define( 'DB_USER', 'wp_user' );
define( 'DB_PASSWORD', '@@R::A62:20@@' );
define( 'DB_HOST', 'mysql.internal' );

define( 'AUTH_KEY',         '@@R::A62:20@@#!@@R::B64:20@@&*(@@R::A62:20@@' );
define( 'SECURE_AUTH_KEY',  '@@R::A62:22@@^%@@R::B64:20@@[;@@R::A62:18@@' );
define( 'LOGGED_IN_KEY',    '@@R::A62:21@@@:@@R::B64:21@@|~@@R::A62:19@@' );
define( 'NONCE_KEY',        '@@R::A62:19@@),@@R::B64:23@@=-@@R::A62:18@@' );
define( 'AUTH_SALT',        '@@R::A62:20@@!?@@R::B64:20@@.@@R::A62:21@@' );
define( 'SECURE_AUTH_SALT', '@@R::A62:20@@][@@R::B64:22@@$@@R::A62:19@@' );
define( 'LOGGED_IN_SALT',   '@@R::A62:18@@*&@@R::B64:24@@#@@R::A62:20@@' );
define( 'NONCE_SALT',       '@@R::A62:23@@-+@@R::B64:19@@;@@R::A62:19@@' );

$table_prefix = 'wp_';
define( 'WP_DEBUG', false );
