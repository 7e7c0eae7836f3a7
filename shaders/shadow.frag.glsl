#version 150
uniform vec3 u_shadow;  // the ground's colour in shade
uniform vec3 u_fog_color;
in float v_fog;
out vec4 o_color;

void main() {
    o_color = vec4(mix(u_shadow, u_fog_color, v_fog), 1.0);
}
